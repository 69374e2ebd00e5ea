//! The `ats-p2p` command-line tool.

fn main() {
    eprintln!("ats-p2p: no commands yet");
    std::process::exit(2);
}
