//! The real-path benchmark's topology and its cells (`bin/path.rs` runs them).
//!
//! ```text
//! a   eth-r 10.78.1.2/24, default via 10.78.1.1                the sender
//!  |  veth, MTU 1500
//! r   eth-a 10.78.1.1/24, eth-b 10.78.2.1/24, forwarding on    the router: rate, loss, delay
//!  |  veth, MTU 1500
//! b   eth-r 10.78.2.2/24, default via 10.78.2.1                the receiver
//! ```
//!
//! UDP segmentation offload is off on the hosts' links, so a GSO train leaves the host as
//! MTU-sized packets, as from a NIC. A cell shapes the router: `tc tbf` on both of its interfaces (so data towards `b` and ACKs
//! towards `a` each get the rate), random loss on what arrives on each interface (data and ACKs
//! each lose `loss`), and, for a round-trip time, the delay relay ([`crate::delay_relay`]) on the
//! router: the sender then talks to the relay's side-A address, and the relay to the receiver;
//! the tbf and the loss rules apply to the relayed datagrams as to forwarded ones. Without delay
//! the router forwards in the kernel.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::netns::{self, Namespace, Tbf};

/// The sender's address.
pub const A_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 78, 1, 2));
/// The router's address on the sender's link (the relay's side A).
pub const R_A_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 78, 1, 1));
/// The router's address on the receiver's link (the relay's side B).
pub const R_B_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 78, 2, 1));
/// The receiver's address.
pub const B_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 78, 2, 2));
/// MTU of both links.
pub const MTU: u32 = 1500;
/// The sender's and the receiver's interface towards the router.
pub const HOST_DEV: &str = "eth-r";
/// The router's interface towards the sender.
pub const R_DEV_A: &str = "eth-a";
/// The router's interface towards the receiver.
pub const R_DEV_B: &str = "eth-b";

/// One path to measure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cell {
    /// Name for `--cells` and the table.
    pub name: &'static str,
    /// Rate limit each way, bits/s.
    pub rate_bit: Option<u64>,
    /// Drop probability of each packet entering the router, each way.
    pub loss: f64,
    /// Round-trip time added by the relay (half each way); zero: kernel forwarding.
    pub rtt: Duration,
}

/// 200 Mbit/s, the goal's limit.
pub const RATE_200M: u64 = 200_000_000;

/// Every cell, in table order. The last but one is the goal: ≥ 80 % of 200 Mbit/s at 1 % loss
/// and 50 ms RTT.
pub const CELLS: [Cell; 6] = [
    Cell {
        name: "clean",
        rate_bit: None,
        loss: 0.0,
        rtt: Duration::ZERO,
    },
    Cell {
        name: "loss1",
        rate_bit: None,
        loss: 0.01,
        rtt: Duration::ZERO,
    },
    Cell {
        name: "200M",
        rate_bit: Some(RATE_200M),
        loss: 0.0,
        rtt: Duration::ZERO,
    },
    Cell {
        name: "200M_loss1",
        rate_bit: Some(RATE_200M),
        loss: 0.01,
        rtt: Duration::ZERO,
    },
    Cell {
        name: "200M_rtt50",
        rate_bit: Some(RATE_200M),
        loss: 0.0,
        rtt: Duration::from_millis(50),
    },
    Cell {
        name: "200M_loss1_rtt50",
        rate_bit: Some(RATE_200M),
        loss: 0.01,
        rtt: Duration::from_millis(50),
    },
];

impl Cell {
    /// The cell called `name`.
    pub fn by_name(name: &str) -> Option<Self> {
        CELLS.iter().find(|c| c.name == name).copied()
    }

    /// One line that says what the cell is.
    pub fn describe(&self) -> String {
        let rate = self.rate_bit.map_or("no limit".to_owned(), |r| {
            format!("{} Mbit/s", r / 1_000_000)
        });
        format!(
            "{rate}, {}% loss each way, RTT {} ms",
            self.loss * 100.0,
            self.rtt.as_millis()
        )
    }

    /// Whether the delay relay carries this cell's traffic.
    pub fn uses_relay(&self) -> bool {
        !self.rtt.is_zero()
    }
}

/// A built topology; dropping it deletes the namespaces.
#[derive(Debug)]
pub struct PathLab {
    /// The sender's namespace.
    pub a: Namespace,
    /// The router's namespace.
    pub r: Namespace,
    /// The receiver's namespace.
    pub b: Namespace,
}

impl PathLab {
    /// Builds the three namespaces and shapes the router for `cell`.
    pub fn build(cell: &Cell) -> anyhow::Result<Self> {
        let lab = Self {
            a: Namespace::create("a")?,
            r: Namespace::create("r")?,
            b: Namespace::create("b")?,
        };
        netns::veth(&lab.a, HOST_DEV, &lab.r, R_DEV_A, MTU)?;
        netns::veth(&lab.r, R_DEV_B, &lab.b, HOST_DEV, MTU)?;
        lab.a.add_addr(HOST_DEV, &format!("{A_ADDR}/24"))?;
        lab.r.add_addr(R_DEV_A, &format!("{R_A_ADDR}/24"))?;
        lab.r.add_addr(R_DEV_B, &format!("{R_B_ADDR}/24"))?;
        lab.b.add_addr(HOST_DEV, &format!("{B_ADDR}/24"))?;
        // Real packets on the links, not GSO trains (see `Namespace::set_offload`).
        for host in [&lab.a, &lab.b] {
            host.set_offload(HOST_DEV, "tx-udp-segmentation", false)?;
        }
        lab.a.add_route("default", &R_A_ADDR.to_string())?;
        lab.b.add_route("default", &R_B_ADDR.to_string())?;
        lab.r.enable_forwarding()?;
        for dev in [R_DEV_A, R_DEV_B] {
            if let Some(rate) = cell.rate_bit {
                lab.r.set_tbf(dev, &Tbf::new(rate))?;
            }
            if cell.loss > 0.0 {
                lab.r.add_random_loss(dev, cell.loss)?;
            }
        }
        Ok(lab)
    }

    /// Packets the router dropped so far, sender → receiver and back.
    pub fn drops(&self) -> anyhow::Result<RouterDrops> {
        Ok(RouterDrops {
            loss: (self.r.loss_drops(R_DEV_A)?, self.r.loss_drops(R_DEV_B)?),
            queue: (self.r.qdisc_drops(R_DEV_B)?, self.r.qdisc_drops(R_DEV_A)?),
        })
    }
}

/// Packets the router dropped, each as (sender → receiver, receiver → sender).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterDrops {
    /// By the random loss rules.
    pub loss: (u64, u64),
    /// By a full queue (the tbf's, or the interface's without a limit).
    pub queue: (u64, u64),
}

impl RouterDrops {
    /// What was dropped since `before`.
    pub fn since(&self, before: &Self) -> Self {
        Self {
            loss: (self.loss.0 - before.loss.0, self.loss.1 - before.loss.1),
            queue: (self.queue.0 - before.queue.0, self.queue.1 - before.queue.1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_names_are_unique_and_the_goal_cell_is_there() {
        for (i, c) in CELLS.iter().enumerate() {
            assert!(
                CELLS[i + 1..].iter().all(|d| d.name != c.name),
                "{}",
                c.name
            );
            assert!((0.0..1.0).contains(&c.loss));
        }
        let goal = Cell::by_name("200M_loss1_rtt50").expect("goal cell");
        assert_eq!(goal.rate_bit, Some(RATE_200M));
        assert_eq!(goal.rtt, Duration::from_millis(50));
        assert!(goal.uses_relay());
        assert!(!Cell::by_name("clean").expect("clean").uses_relay());
        assert_eq!(Cell::by_name("nope"), None);
    }
}
