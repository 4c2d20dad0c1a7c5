//! A pseudo-terminal for the commands under test to draw on, as a user's
//! terminal: what they show there (progress) is read back by a thread.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::thread::JoinHandle;

/// A pseudo-terminal of 200x50 and the reader of its screen output.
pub struct Pty {
    slave: OwnedFd,
    screen: JoinHandle<Vec<u8>>,
}

impl Pty {
    pub fn open() -> Pty {
        let size = nix::pty::Winsize {
            ws_row: 50,
            ws_col: 200,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).unwrap();
        let mut master = File::from(pty.master);
        let screen = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                match master.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => seen.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // EIO: every slave end is closed (the commands ended).
                    Err(_) => break,
                }
            }
            seen
        });
        Pty {
            slave: pty.slave,
            screen,
        }
    }

    pub fn stderr(&self) -> Stdio {
        Stdio::from(self.slave.try_clone().unwrap())
    }

    /// Everything written to the terminal, once every command on it ended.
    pub fn screen(self) -> String {
        drop(self.slave);
        String::from_utf8_lossy(&self.screen.join().unwrap()).into_owned()
    }
}
