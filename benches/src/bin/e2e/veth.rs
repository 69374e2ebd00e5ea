//! Two network namespaces joined by a veth pair, MTU 1500 (root; `ip` from iproute2), removed
//! when dropped. Side A is 10.201.0.1, side B 10.201.0.2.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::proc::Side;

const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);
const MTU: &str = "1500";

/// The two namespaces; dropping it deletes them (and with them the veth pair).
pub(crate) struct Pair {
    ns_a: String,
    ns_b: String,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Pair {
    pub(crate) fn create() -> anyhow::Result<Self> {
        let id = std::process::id();
        let pair = Self {
            ns_a: format!("e2e-a-{id}"),
            ns_b: format!("e2e-b-{id}"),
        };
        ip(&["netns", "add", &pair.ns_a])?;
        ip(&["netns", "add", &pair.ns_b])?;
        // Interface names are at most 15 bytes.
        let (if_a, if_b) = (
            format!("e2ea{}", id % 100_000),
            format!("e2eb{}", id % 100_000),
        );
        ip(&["link", "add", &if_a, "type", "veth", "peer", "name", &if_b])?;
        for (ns, dev, addr) in [(&pair.ns_a, &if_a, ADDR_A), (&pair.ns_b, &if_b, ADDR_B)] {
            ip(&["link", "set", dev, "netns", ns])?;
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "mtu", MTU, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }

    /// Side A (hub and sender) and side B (receiver).
    pub(crate) fn sides(&self) -> (Side, Side) {
        (
            Side {
                netns: Some(self.ns_a.clone()),
                host: ADDR_A,
            },
            Side {
                netns: Some(self.ns_b.clone()),
                host: ADDR_B,
            },
        )
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.ns_a, &self.ns_b] {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("removing namespace {ns}: {e:#}");
            }
        }
    }
}
