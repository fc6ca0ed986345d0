//! `ShutdownSignal`: a server process that gets SIGTERM or SIGINT stops waiting, shuts its
//! system down gracefully and exits 0, with its shutdown output.
//!
//! The signal mask must be set before any thread starts, which libtest's harness does not
//! allow (it runs tests on threads of its own): this test has its own `main`
//! (`harness = false`). It runs itself again as the server, with `KENDYNET_SIGNAL_CHILD` set,
//! and plays the client and the process manager.

use kendynet::signal::ShutdownSignal;
use kendynet::{Actor, Context, NetEvent, System, WPacket};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CHILD_VAR: &str = "KENDYNET_SIGNAL_CHILD";
/// The bound of every wait.
const WAIT: Duration = Duration::from_secs(20);

struct Echo;

impl Actor for Echo {
    type Msg = NetEvent;
    fn handle(&mut self, ev: NetEvent, _: &mut Context<Self>) {
        if let NetEvent::Packet { sock, packet } = ev {
            let _ = sock.send(WPacket::from(packet));
        }
    }
}

/// The server: an echo on a free port until a signal comes (or a minute passes, which
/// fails the test: the parent would have signalled long before).
fn child() -> ExitCode {
    let signal = ShutdownSignal::install().expect("signal mask");
    let system = System::builder().workers(2).build().expect("system");
    let echo = system.spawn(Echo);
    let addr = system
        .listen("127.0.0.1:0".parse().unwrap(), &echo)
        .expect("listen");
    println!("listening on {addr}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = signal.wait_until(Some(deadline)).expect("wait");
    let Some(sig) = got else {
        println!("no signal came");
        return ExitCode::from(3);
    };
    println!("{sig}: shutting down");
    let report = system.shutdown(Duration::from_secs(5));
    println!(
        "stopped: graceful={} sockets_left={}",
        report.graceful, report.sockets_left
    );
    if report.graceful {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Reads the child's stdout on a thread, line by line.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_line(rx: &mpsc::Receiver<String>, what: &str) -> Result<String, String> {
    rx.recv_timeout(WAIT)
        .map_err(|e| format!("no line from the child ({what}): {e}"))
}

/// Waits for the child to exit, within [`WAIT`].
fn wait_exit(child: &mut Child) -> Result<std::process::ExitStatus, String> {
    let until = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(status);
        }
        if Instant::now() >= until {
            let _ = child.kill();
            return Err(format!(
                "the child did not exit within {WAIT:?} of the signal"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One scenario: a server, a client with an open connection, then `signal` (`TERM`/`INT`).
fn scenario(signal: &str, expect: &str) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .env(CHILD_VAR, "1")
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawning the child: {e}"))?;
    let lines = lines_of(&mut child);
    let result = (|| {
        let first = next_line(&lines, "its address")?;
        let addr: SocketAddr = first
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("unexpected first line {first:?}"))?;
        // It serves: one echo over a connection that stays open across the signal.
        let mut client = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        client.set_read_timeout(Some(WAIT)).unwrap();
        client
            .write_all(&[3, 0, 0, 0, b'a', b'b', b'c'])
            .map_err(|e| e.to_string())?;
        let mut echo = [0u8; 7];
        client.read_exact(&mut echo).map_err(|e| e.to_string())?;
        if &echo[4..] != b"abc" {
            return Err(format!("bad echo {echo:?}"));
        }
        let killed = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .map_err(|e| format!("kill: {e}"))?;
        if !killed.success() {
            return Err(format!("kill -{signal} failed"));
        }
        let status = wait_exit(&mut child)?;
        let rest: Vec<String> = lines.try_iter().collect();
        let said = rest.join("\n");
        if !status.success() {
            return Err(format!(
                "exit status {status} after {signal}; it said:\n{said}"
            ));
        }
        if !said.contains(&format!("{expect}: shutting down"))
            || !said.contains("stopped: graceful=true sockets_left=0")
        {
            return Err(format!("unexpected shutdown output:\n{said}"));
        }
        // The graceful shutdown closed the client's connection.
        let mut buf = [0u8; 1];
        match client.read(&mut buf) {
            Ok(0) => Ok(()),
            other => Err(format!("the client's connection was not closed: {other:?}")),
        }
    })();
    if result.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    result
}

fn main() -> ExitCode {
    if std::env::var_os(CHILD_VAR).is_some() {
        return child();
    }
    // libtest-style arguments (a filter, `--list`...) are accepted and ignored, except that
    // `--list` lists nothing, as cargo's test listing expects.
    if std::env::args().any(|a| a == "--list") {
        return ExitCode::SUCCESS;
    }
    let mut failed = 0;
    let cases = [
        ("sigterm_stops_a_server_gracefully", "TERM", "SIGTERM"),
        ("sigint_stops_a_server_gracefully", "INT", "SIGINT"),
    ];
    println!("\nrunning {} tests", cases.len());
    for (name, signal, expect) in cases {
        match scenario(signal, expect) {
            Ok(()) => println!("test {name} ... ok"),
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED\n{e}");
            }
        }
    }
    let passed = cases.len() - failed;
    let verdict = if failed == 0 { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {verdict}. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out\n"
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
