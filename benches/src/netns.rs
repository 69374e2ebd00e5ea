//! Network namespaces for benchmarks on real (if virtual) paths: veth links with an MTU,
//! addresses and routes, a `tc tbf` rate limit, random loss with `iptables -m statistic`, and
//! processes run inside a namespace.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use benches::netns::{self, Namespace, Tbf};
//! netns::check_available()?; // root, ip, tc, iptables, ethtool; a clear error otherwise
//! netns::cleanup_stale();    // labs left behind by killed runs
//! let a = Namespace::create("a")?;
//! let r = Namespace::create("r")?;
//! netns::veth(&a, "eth-r", &r, "eth-a", 1500)?;
//! a.add_addr("eth-r", "10.9.0.2/24")?;
//! r.add_addr("eth-a", "10.9.0.1/24")?;
//! r.set_tbf("eth-a", &Tbf::new(200_000_000))?;
//! r.add_random_loss("eth-a", 0.01)?;
//! let mut child = a.spawn("ping", &["-c1", "10.9.0.1"])?;
//! # Ok(()) }
//! ```
//!
//! Names are `atsns-<pid>-<n>-<label>`: unique per process, and [`cleanup_stale`] deletes those
//! whose process is gone. Dropping a [`Namespace`] kills every process still inside it and
//! deletes it (and so its end of every veth: the peer end goes with it), also while a panic
//! unwinds. Everything here shells out to iproute2 and iptables; errors carry the command and
//! its stderr.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

// The child-process handling shared with the tests' namespace lab.
#[path = "../../ats-p2p-swarm/tests/support/line_child.rs"]
mod line_child;
use line_child::{LineChild, STDERR_PREFIX};

/// Prefix of every namespace created here (and deleted by [`cleanup_stale`] when stale).
pub const PREFIX: &str = "atsns-";

static NS_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Fails with what is missing unless this process can build namespaces: root, `ip`, `tc`,
/// `iptables` and `ethtool` installed.
pub fn check_available() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("network namespaces need root (run with sudo)");
    }
    for (tool, arg, pkg) in [
        ("ip", "-V", "iproute2"),
        ("tc", "-V", "iproute2"),
        ("iptables", "--version", "iptables"),
        ("ethtool", "--version", "ethtool"),
    ] {
        run(Command::new(tool).arg(arg))
            .with_context(|| format!("`{tool}` missing (apt-get install -y {pkg})"))?;
    }
    Ok(())
}

/// Deletes namespaces named `atsns-<pid>-...` whose creating process no longer exists.
pub fn cleanup_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(ns) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = ns
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            delete_ns(ns);
        }
    }
}

/// A token bucket rate limit (`tc qdisc replace dev D root tbf rate R burst B latency L`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tbf {
    /// Rate, bits per second.
    pub rate_bit: u64,
    /// Bucket size, bytes: how much may leave back to back at line speed.
    pub burst_bytes: u64,
    /// How long a packet may wait in the queue; sets the queue length (rate × latency).
    pub latency: Duration,
}

impl Tbf {
    /// `rate_bit` with a 64 KiB burst and a 50 ms queue (at 200 Mbit/s: 1.25 MB, one
    /// bandwidth-delay product of a 50 ms path).
    pub fn new(rate_bit: u64) -> Self {
        Self {
            rate_bit,
            burst_bytes: 64 * 1024,
            latency: Duration::from_millis(50),
        }
    }

    /// Rate in bytes per second.
    pub fn bytes_per_s(&self) -> f64 {
        self.rate_bit as f64 / 8.0
    }
}

/// A network namespace that is deleted on drop; see the module docs.
#[derive(Debug)]
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// Creates `atsns-<pid>-<n>-<label>` with its loopback up.
    pub fn create(label: &str) -> anyhow::Result<Self> {
        let n = NS_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{n}-{label}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Self { name };
        ns.run(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `args` inside the namespace to completion; returns stdout, errors carry stderr.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let (program, rest) = args.split_first().context("empty command")?;
        run(self.command(program).args(rest))
    }

    /// Adds `cidr` (e.g. `10.9.0.1/24`) to `dev` and sets the link up.
    pub fn add_addr(&self, dev: &str, cidr: &str) -> anyhow::Result<()> {
        self.run(&["ip", "addr", "add", cidr, "dev", dev])?;
        self.run(&["ip", "link", "set", "dev", dev, "up"])?;
        Ok(())
    }

    /// Adds a route to `dst` (a prefix or `default`) via `gateway`.
    pub fn add_route(&self, dst: &str, gateway: &str) -> anyhow::Result<()> {
        self.run(&["ip", "route", "add", dst, "via", gateway])?;
        Ok(())
    }

    /// Switches an offload `feature` of `dev` on or off (`ethtool -K dev feature on|off`).
    ///
    /// A veth hands a UDP GSO train (up to 64 segments sent with one `sendmsg`) on as one
    /// packet: routers, `tbf` and loss rules then see one 64 KB packet where a wire carries 44.
    /// `tx-udp-segmentation off` on the sending host's veth makes the kernel cut the train into
    /// MTU-sized packets there, as a NIC does.
    pub fn set_offload(&self, dev: &str, feature: &str, on: bool) -> anyhow::Result<()> {
        self.run(&["ethtool", "-K", dev, feature, if on { "on" } else { "off" }])?;
        Ok(())
    }

    /// Switches IPv4 forwarding on (a router).
    pub fn enable_forwarding(&self) -> anyhow::Result<()> {
        self.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        Ok(())
    }

    /// Rate-limits what leaves through `dev` (replaces its root qdisc).
    pub fn set_tbf(&self, dev: &str, tbf: &Tbf) -> anyhow::Result<()> {
        let rate = format!("{}bit", tbf.rate_bit);
        let burst = format!("{}b", tbf.burst_bytes);
        let latency = format!("{}us", tbf.latency.as_micros());
        self.run(&[
            "tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", &rate, "burst", &burst,
            "latency", &latency,
        ])?;
        Ok(())
    }

    /// Drops each packet that arrives on `dev` with `probability`, whether it is forwarded or
    /// for a local socket (`iptables -t raw -A PREROUTING -i dev -m statistic`).
    pub fn add_random_loss(&self, dev: &str, probability: f64) -> anyhow::Result<()> {
        if !(0.0..=1.0).contains(&probability) {
            bail!("loss probability {probability} is not within 0..=1");
        }
        let p = format!("{probability}");
        self.run(&[
            "iptables",
            "-t",
            "raw",
            "-A",
            "PREROUTING",
            "-i",
            dev,
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &p,
            "-j",
            "DROP",
        ])?;
        Ok(())
    }

    /// Packets the loss rules on `dev` dropped so far (sum of their counters).
    pub fn loss_drops(&self, dev: &str) -> anyhow::Result<u64> {
        let out = self.run(&[
            "iptables",
            "-t",
            "raw",
            "-L",
            "PREROUTING",
            "-v",
            "-n",
            "-x",
        ])?;
        Ok(out
            .lines()
            .filter(|l| l.contains("statistic") && l.split_whitespace().any(|w| w == dev))
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .sum())
    }

    /// Packets the root qdisc of `dev` dropped so far (`tc -s qdisc`: its queue overflowed).
    pub fn qdisc_drops(&self, dev: &str) -> anyhow::Result<u64> {
        let out = self.run(&["tc", "-s", "qdisc", "show", "dev", dev])?;
        let n = out
            .split("(dropped ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.trim().parse().ok())
            .with_context(|| format!("no drop counter in `tc -s qdisc show dev {dev}`: {out}"))?;
        Ok(n)
    }

    /// Starts `program args` inside the namespace with piped stdio; see [`NsChild`].
    pub fn spawn(&self, program: &str, args: &[&str]) -> anyhow::Result<NsChild> {
        let mut cmd = self.command(program);
        cmd.args(args);
        NsChild::spawn(cmd, &format!("{}:{program}", self.name))
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        delete_ns(&self.name);
    }
}

/// Connects `a` and `b` with a veth pair (`a_dev` in `a`, `b_dev` in `b`), both ends with `mtu`
/// and up. Addresses are the caller's ([`Namespace::add_addr`]).
pub fn veth(
    a: &Namespace,
    a_dev: &str,
    b: &Namespace,
    b_dev: &str,
    mtu: u32,
) -> anyhow::Result<()> {
    let mtu = mtu.to_string();
    run(Command::new("ip").args([
        "link", "add", "name", a_dev, "netns", &a.name, "mtu", &mtu, "type", "veth", "peer",
        "name", b_dev, "netns", &b.name, "mtu", &mtu,
    ]))?;
    a.run(&["ip", "link", "set", "dev", a_dev, "up"])?;
    b.run(&["ip", "link", "set", "dev", b_dev, "up"])?;
    Ok(())
}

/// Kills every process inside `ns` and deletes it.
fn delete_ns(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(Stdio::null())
        .status();
}

/// Runs `cmd` to completion; its stdout, or an error with the command and its stderr.
fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// [`NsChild::next_stdout_line`] got no line: the process said nothing in time, or closed its
/// output.
#[derive(Debug, thiserror::Error)]
#[error("{label}: {} (exit: {exit:?}); output:\n{log}",
    timed_out.map_or("output closed".to_owned(), |t| format!("no output within {t:?}")))]
pub struct NoOutput {
    /// The process's label.
    pub label: String,
    /// `Some(timeout)` if the time ran out, `None` if the output closed.
    pub timed_out: Option<Duration>,
    /// Its exit status, if it exited.
    pub exit: Option<std::process::ExitStatus>,
    /// Everything it printed.
    pub log: String,
}

/// A process started in a namespace (a `LineChild`, shared with the tests' namespace lab):
/// reader threads collect its stdout lines (and its stderr lines, prefixed `stderr: ` and echoed
/// to ours). Drop closes stdin, sends SIGTERM, and kills it after two seconds.
#[derive(Debug)]
pub struct NsChild {
    label: String,
    child: LineChild,
    /// Every line read so far, for error messages.
    log: Vec<String>,
}

impl NsChild {
    fn spawn(mut cmd: Command, label: &str) -> anyhow::Result<Self> {
        let child =
            LineChild::spawn(&mut cmd, label).with_context(|| format!("spawning {cmd:?}"))?;
        Ok(Self {
            label: label.to_owned(),
            child,
            log: Vec::new(),
        })
    }

    /// `<namespace>:<program>`, for messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Writes `line` and a newline to the process's stdin.
    pub fn send_line(&mut self, line: &str) -> anyhow::Result<()> {
        self.child
            .write_stdin(format!("{line}\n").as_bytes())
            .with_context(|| format!("{}: writing stdin", self.label))
    }

    /// Closes the process's stdin (EOF).
    pub fn close_stdin(&mut self) {
        self.child.close_stdin();
    }

    /// The next stdout line that does not start with `stderr: `, within `timeout`; a
    /// [`NoOutput`] error on timeout or when the process closed its output.
    pub fn next_stdout_line(&mut self, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.child.next_line(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if !line.starts_with(STDERR_PREFIX) {
                        return Ok(line);
                    }
                }
                Err(e) => {
                    return Err(NoOutput {
                        label: self.label.clone(),
                        timed_out: matches!(e, RecvTimeoutError::Timeout).then_some(timeout),
                        exit: self.child.exit_status(),
                        log: self.log.join("\n"),
                    }
                    .into());
                }
            }
        }
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.child.wait_exit(timeout)
    }
}
