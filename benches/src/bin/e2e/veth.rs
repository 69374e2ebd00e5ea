//! Two network namespaces joined by a veth pair, MTU 1500, built with the path bench's
//! `benches::netns` (root; iproute2): side A 10.201.0.1, side B 10.201.0.2. Dropping the pair
//! kills what still runs inside and deletes both namespaces (and with them the veth).

use std::net::Ipv4Addr;

use benches::netns::{self, Namespace};

use crate::proc::Side;

const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);
const PREFIX_LEN: u8 = 24;
const MTU: u32 = 1500;
/// The veth ends: in A the device towards B, in B the one towards A.
const DEV_A: &str = "veth-b";
const DEV_B: &str = "veth-a";

/// The two namespaces (deleted on drop).
pub(crate) struct Pair {
    a: Namespace,
    b: Namespace,
}

impl Pair {
    pub(crate) fn create() -> anyhow::Result<Self> {
        netns::check_available()?;
        netns::cleanup_stale();
        let pair = Self {
            a: Namespace::create("e2e-a")?,
            b: Namespace::create("e2e-b")?,
        };
        netns::veth(&pair.a, DEV_A, &pair.b, DEV_B, MTU)?;
        pair.a.add_addr(DEV_A, &format!("{ADDR_A}/{PREFIX_LEN}"))?;
        pair.b.add_addr(DEV_B, &format!("{ADDR_B}/{PREFIX_LEN}"))?;
        Ok(pair)
    }

    /// Side A (hub and sender) and side B (receiver).
    pub(crate) fn sides(&self) -> (Side, Side) {
        (
            Side {
                netns: Some(self.a.name().to_owned()),
                host: ADDR_A,
            },
            Side {
                netns: Some(self.b.name().to_owned()),
                host: ADDR_B,
            },
        )
    }
}
