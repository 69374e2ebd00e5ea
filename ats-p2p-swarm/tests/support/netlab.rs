//! A network-namespace NAT lab for integration tests (shell counterpart: `interop/netlab.sh`).
//!
//! [`NetLab::start_with`] builds five namespaces that are connected only to each other (and
//! [`NetLab::start`] the same with one NAT kind on both routers):
//!
//! ```text
//! pub  br0 198.18.0.1/24             "internet": bootstrap and DHT nodes
//!  | (bridge)
//! ra   wan 198.18.0.2/24, lan 10.201.1.1/24   NAT router A
//! rb   wan 198.18.0.3/24, lan 10.201.2.1/24   NAT router B
//! ha   lan 10.201.1.2/24, default via 10.201.1.1
//! hb   lan 10.201.2.2/24, default via 10.201.2.1
//! ```
//!
//! Each router MASQUERADEs `lan -> wan`, forwards `wan -> lan` only for established flows and drops
//! unsolicited packets addressed to itself. Each router has its own [`NatKind`]: with
//! [`NatKind::Consistent`] Linux keeps the source port (endpoint-independent mapping), so a plain
//! holepunch works; [`NatKind::Random`] adds `--random-fully` (a fresh random port per
//! destination): one such NAT needs hyperdht's random-NAT punch, two need a relay. Forwarding is
//! switched on inside the router namespaces only; no namespace has a route to the host's own
//! network.
//!
//! Where the lab cannot be built (no `ip netns`, no iptables NAT) a test skips and says so on
//! stderr (`SKIP: ...`) — except when the `CI` environment variable is set: CI runs as root and
//! must run the lab, so there [`NetLab::start_with`] panics with the reason instead.
//!
//! Namespace names are `atsnl-<pid>-<n>-<node>`, unique per process and lab. Dropping the
//! [`NetLab`] kills every process still inside its namespaces and deletes them, also when the test
//! panics; [`NetLab::start_with`] first deletes labs left behind by processes that no longer
//! exist.
//!
//! Include it from a test file with `#[path = "support/netlab.rs"] mod netlab;`.
#![allow(dead_code)]

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[path = "line_child.rs"]
mod line_child;
use line_child::LineChild;

/// Prefix of every namespace this harness creates (and may delete when stale).
pub(crate) const PREFIX: &str = "atsnl-";

/// Labs created by this process, to make names unique.
static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// How a router maps ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NatKind {
    /// Port-preserving, endpoint-independent mapping: holepunching works.
    Consistent,
    /// `MASQUERADE --random-fully`: a new random port per destination; a plain holepunch cannot
    /// work (hyperdht's random-NAT punch can, when the other side is consistent).
    Random,
}

impl NatKind {
    /// `consistent` or `random`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Consistent => "consistent",
            Self::Random => "random",
        }
    }
}

/// One of the five namespaces of a lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Node {
    /// The public side: bootstrap and DHT nodes.
    Public,
    /// NAT router in front of [`Node::HostA`].
    RouterA,
    /// NAT router in front of [`Node::HostB`].
    RouterB,
    /// Private host behind router A.
    HostA,
    /// Private host behind router B.
    HostB,
}

impl Node {
    const ALL: [Self; 5] = [
        Self::HostA,
        Self::HostB,
        Self::RouterA,
        Self::RouterB,
        Self::Public,
    ];

    fn suffix(self) -> &'static str {
        match self {
            Self::Public => "pub",
            Self::RouterA => "ra",
            Self::RouterB => "rb",
            Self::HostA => "ha",
            Self::HostB => "hb",
        }
    }

    /// The node's own address: public side for `Public` and the routers, private for the hosts.
    pub(crate) fn addr(self) -> Ipv4Addr {
        match self {
            Self::Public => Ipv4Addr::new(198, 18, 0, 1),
            Self::RouterA => Ipv4Addr::new(198, 18, 0, 2),
            Self::RouterB => Ipv4Addr::new(198, 18, 0, 3),
            Self::HostA => Ipv4Addr::new(10, 201, 1, 2),
            Self::HostB => Ipv4Addr::new(10, 201, 2, 2),
        }
    }

    /// The address the public side sees for traffic from this node (its router's for hosts).
    pub(crate) fn public_addr(self) -> Ipv4Addr {
        match self {
            Self::HostA => Self::RouterA.addr(),
            Self::HostB => Self::RouterB.addr(),
            other => other.addr(),
        }
    }
}

/// A built lab; dropping it tears everything down.
#[derive(Debug)]
pub(crate) struct NetLab {
    name: String,
    /// NAT of router A (in front of host A) and of router B.
    nats: (NatKind, NatKind),
    /// Namespaces created so far (teardown deletes exactly these).
    created: Vec<String>,
}

impl NetLab {
    /// [`NetLab::start_with`] with the same NAT on both routers.
    pub(crate) fn start(kind: NatKind) -> Option<Self> {
        Self::start_with(kind, kind)
    }

    /// Builds a lab with NAT `a` on router A and `b` on router B, or prints `SKIP: <reason>` and
    /// returns `None` where network namespaces or iptables NAT are not available — unless `CI` is
    /// set, where that panics. Panics (after tearing down) if building fails otherwise.
    pub(crate) fn start_with(a: NatKind, b: NatKind) -> Option<Self> {
        if let Err(reason) = available() {
            if std::env::var_os("CI").is_some() {
                panic!("network-namespace NAT lab unavailable, and CI must run it: {reason}");
            }
            // Straight to the process's stderr: the test harness captures `eprintln!` of passing
            // tests, and a skip must be visible.
            let msg = format!("SKIP: network-namespace NAT lab unavailable: {reason}\n");
            let _ = std::io::stderr().write_all(msg.as_bytes());
            return None;
        }
        cleanup_stale();
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut lab = Self {
            name: format!("{PREFIX}{}-{n}", std::process::id()),
            nats: (a, b),
            created: Vec::new(),
        };
        if let Err(e) = lab.build() {
            panic!("building NAT lab {}: {e}", lab.name);
        }
        Some(lab)
    }

    /// The NATs of router A and router B.
    pub(crate) fn nats(&self) -> (NatKind, NatKind) {
        self.nats
    }

    /// The namespace name of `node` (for `ip netns exec`).
    pub(crate) fn ns(&self, node: Node) -> String {
        format!("{}-{}", self.name, node.suffix())
    }

    /// A command that runs `program` inside `node`'s namespace.
    pub(crate) fn command(&self, node: Node, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(node), program]);
        cmd
    }

    /// Runs `args` inside `node` to completion; errors carry stderr.
    pub(crate) fn run(&self, node: Node, args: &[&str]) -> Result<Output, String> {
        let (program, rest) = args.split_first().ok_or("empty command")?;
        let mut cmd = self.command(node, program);
        cmd.args(rest);
        run_ok(&mut cmd)
    }

    /// Starts a long-lived process in `node` with piped stdio; see [`LabProcess`].
    pub(crate) fn spawn(&self, node: Node, program: &str, args: &[&str]) -> LabProcess {
        let mut cmd = self.command(node, program);
        cmd.args(args);
        LabProcess::spawn(cmd, &format!("{}:{program}", node.suffix()))
    }

    fn add_ns(&mut self, node: Node) -> Result<String, String> {
        let ns = self.ns(node);
        run_ok(Command::new("ip").args(["netns", "add", &ns]))?;
        self.created.push(ns.clone());
        self.run(node, &["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn build(&mut self) -> Result<(), String> {
        let public = self.add_ns(Node::Public)?;
        let p = Node::Public;
        self.run(p, &["ip", "link", "add", "br0", "type", "bridge"])?;
        self.run(p, &["ip", "addr", "add", "198.18.0.1/24", "dev", "br0"])?;
        self.run(p, &["ip", "link", "set", "br0", "up"])?;
        let sides = [
            (Node::RouterA, Node::HostA, "upa", 1u8, self.nats.0),
            (Node::RouterB, Node::HostB, "upb", 2u8, self.nats.1),
        ];
        for (router, host, uplink, net, nat) in sides {
            let r = self.add_ns(router)?;
            let h = self.add_ns(host)?;
            let ip = |args: &[&str]| run_ok(Command::new("ip").args(args));
            ip(&[
                "link", "add", "wan", "netns", &r, "type", "veth", "peer", "name", uplink, "netns",
                &public,
            ])?;
            ip(&[
                "link", "add", "lan", "netns", &r, "type", "veth", "peer", "name", "lan", "netns",
                &h,
            ])?;
            self.run(p, &["ip", "link", "set", uplink, "master", "br0", "up"])?;
            let wan = format!("{}/24", router.addr());
            let lan_r = format!("10.201.{net}.1/24");
            let lan_h = format!("{}/24", host.addr());
            let gw = format!("10.201.{net}.1");
            self.run(router, &["ip", "addr", "add", &wan, "dev", "wan"])?;
            self.run(router, &["ip", "link", "set", "wan", "up"])?;
            self.run(router, &["ip", "addr", "add", &lan_r, "dev", "lan"])?;
            self.run(router, &["ip", "link", "set", "lan", "up"])?;
            self.run(host, &["ip", "addr", "add", &lan_h, "dev", "lan"])?;
            self.run(host, &["ip", "link", "set", "lan", "up"])?;
            self.run(host, &["ip", "route", "add", "default", "via", &gw])?;
            self.run(router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
            let mut masq = vec![
                "iptables",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                "wan",
                "-j",
                "MASQUERADE",
            ];
            if nat == NatKind::Random {
                masq.push("--random-fully");
            }
            self.run(router, &masq)?;
            self.run(router, &["iptables", "-P", "FORWARD", "DROP"])?;
            self.run(
                router,
                &[
                    "iptables", "-A", "FORWARD", "-i", "lan", "-o", "wan", "-j", "ACCEPT",
                ],
            )?;
            self.run(
                router,
                &[
                    "iptables",
                    "-A",
                    "FORWARD",
                    "-i",
                    "wan",
                    "-o",
                    "lan",
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "ESTABLISHED,RELATED",
                    "-j",
                    "ACCEPT",
                ],
            )?;
            // Drop unsolicited packets to the router itself before conntrack confirms an entry
            // for them. Without this an early punch probe from the other side claims the tuple
            // and the router remaps the outgoing port, which breaks holepunching (measured: JS
            // hyperdht then fails with HOLEPUNCH_ABORTED every time). Home routers drop these too.
            self.run(
                router,
                &["iptables", "-A", "INPUT", "-i", "wan", "-j", "DROP"],
            )?;
        }
        Ok(())
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            delete_ns(ns);
        }
    }
}

/// Kills every process inside `ns` (all were started by the test that owns the namespace) and
/// deletes it.
fn delete_ns(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
}

/// Deletes namespaces named `atsnl-<pid>-...` whose creating process no longer exists.
pub(crate) fn cleanup_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(ns) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = ns.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            delete_ns(ns);
        }
    }
}

/// `Ok(())` if this process may create namespaces and use iptables NAT inside them.
fn available() -> Result<(), String> {
    run_ok(Command::new("ip").arg("-V")).map_err(|e| format!("`ip` (iproute2) missing: {e}"))?;
    run_ok(Command::new("iptables").arg("--version"))
        .map_err(|e| format!("`iptables` missing (apt-get install -y iptables): {e}"))?;
    let probe = format!(
        "{PREFIX}{}-probe{}",
        std::process::id(),
        LAB_COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    run_ok(Command::new("ip").args(["netns", "add", &probe]))
        .map_err(|e| format!("`ip netns add` not permitted: {e}"))?;
    let nat = run_ok(
        Command::new("ip").args(["netns", "exec", &probe, "iptables", "-t", "nat", "-L", "-n"]),
    );
    delete_ns(&probe);
    nat.map_err(|e| format!("iptables NAT not usable in a namespace: {e}"))?;
    Ok(())
}

fn run_ok(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A process started in a lab namespace (a [`LineChild`]): its stdout and stderr lines are
/// collected by reader threads (stderr lines are echoed to the test's stderr and kept with a
/// `stderr: ` prefix). Drop closes stdin, sends SIGTERM, and kills it after a grace period.
#[derive(Debug)]
pub(crate) struct LabProcess {
    label: String,
    child: LineChild,
    /// Everything read so far, for failure messages.
    log: Vec<String>,
}

impl LabProcess {
    fn spawn(mut cmd: Command, label: &str) -> Self {
        let child =
            LineChild::spawn(&mut cmd, label).unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        Self {
            label: label.to_owned(),
            child,
            log: Vec::new(),
        }
    }

    /// The label given at spawn (`<node>:<program>`), for messages.
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    /// The OS process id (of `ip netns exec`, which execs the program: same pid).
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// Writes to the process's stdin.
    pub(crate) fn write_stdin(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.child.write_stdin(data)
    }

    /// The next line (stdout, or `stderr: ...`) within `timeout`; `None` on timeout or when both
    /// pipes are closed.
    pub(crate) fn next_line(&mut self, timeout: Duration) -> Option<String> {
        let line = self.child.next_line(timeout).ok()?;
        self.log.push(line.clone());
        Some(line)
    }

    /// Reads lines until one satisfies `pred`, or panics with everything read so far once
    /// `timeout` has passed or the process closed its output.
    pub(crate) fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_line(left) {
                Some(line) if pred(&line) => return line,
                Some(_) => {}
                None => panic!(
                    "{}: no matching line within {timeout:?} (exit: {:?}); output:\n{}",
                    self.label,
                    self.child.exit_status(),
                    self.log.join("\n")
                ),
            }
        }
    }

    /// All lines read so far.
    pub(crate) fn log(&self) -> &[String] {
        &self.log
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.child.wait_exit(timeout)
    }
}
