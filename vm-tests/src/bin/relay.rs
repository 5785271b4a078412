//! `vm-relay PORT [GATE]`: copies stdin to 127.0.0.1:PORT and the answers to stdout.
//!
//! QEMU's user network runs it once per guest connection to 10.0.2.100 (`guestfwd=...-cmd:`),
//! so the guest reaches a server that listens on the host's loopback only, and each
//! connection is independent (the `tcp:` form connects once, at QEMU start).
//!
//! With GATE, the relay is "down" (closes the connection at once) until the file GATE
//! exists: the harness opens it mid-boot (`VmConfig::relay_opens_on`).
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(port) = std::env::args().nth(1).and_then(|p| p.parse::<u16>().ok()) else {
        eprintln!("usage: vm-relay PORT [GATE]");
        return ExitCode::from(2);
    };
    if let Some(gate) = std::env::args_os().nth(2) {
        if !std::path::Path::new(&gate).exists() {
            return ExitCode::from(1);
        }
    }
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return ExitCode::from(1);
    };
    let Ok(mut up) = stream.try_clone() else {
        return ExitCode::from(1);
    };
    let to_server = std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut up);
        let _ = up.shutdown(Shutdown::Write);
    });
    let mut down = stream;
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match down.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let chunk = buf.get(..n).unwrap_or_default();
                if out.write_all(chunk).and_then(|()| out.flush()).is_err() {
                    break;
                }
            }
        }
    }
    drop(to_server);
    ExitCode::SUCCESS
}
