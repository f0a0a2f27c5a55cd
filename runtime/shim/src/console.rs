//! Terminals: the console socket runc sends the pty master to (`--console-socket`, SCM_RIGHTS),
//! and the master itself, read and written through epoll (go-runc `console.go`).

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::pty::Winsize;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::UnixListener;

use crate::error::{InvalidRequest, Result, ShimError};

nix::ioctl_write_ptr_bad!(set_winsize, nix::libc::TIOCSWINSZ, Winsize);

/// A listening socket in a private temp dir, removed on drop.
#[derive(Debug)]
pub struct ConsoleSocket {
    dir: PathBuf,
    path: PathBuf,
    listener: UnixListener,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl ConsoleSocket {
    /// Creates `<tmp>/berth-pty-<pid>-<n>/pty.sock`.
    pub fn new() -> Result<ConsoleSocket> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("berth-pty-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| ShimError::io("mkdir", &dir, e))?;
        let path = dir.join("pty.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(|e| ShimError::io("listen", &path, e))?;
        Ok(ConsoleSocket {
            dir,
            path,
            listener,
        })
    }

    /// The path to pass as `--console-socket`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts runc's connection and receives the pty master.
    pub async fn receive_master(&self) -> Result<OwnedFd> {
        let (stream, _) = self
            .listener
            .accept()
            .await
            .map_err(|e| ShimError::io("accept", &self.path, e))?;
        loop {
            stream
                .readable()
                .await
                .map_err(|e| ShimError::io("console socket", &self.path, e))?;
            match stream.try_io(Interest::READABLE, || {
                recv_fd(stream.as_raw_fd()).map_err(std::io::Error::from)
            }) {
                Ok(Some(fd)) => return Ok(fd),
                Ok(None) => return Err(InvalidRequest::NoConsoleFd.into()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(ShimError::io("recvmsg", &self.path, e)),
            }
        }
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn recv_fd(sock: RawFd) -> nix::Result<Option<OwnedFd>> {
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut received = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel just installed `fd` in our table for us; nothing else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if received.is_none() {
                    received = Some(owned);
                }
            }
        }
    }
    Ok(received)
}

/// A pty master in non-blocking mode.
#[derive(Debug)]
pub struct Pty {
    fd: AsyncFd<OwnedFd>,
}

impl Pty {
    /// Wraps a master fd received from runc.
    pub fn new(fd: OwnedFd) -> Result<Pty> {
        let flags = fcntl(&fd, FcntlArg::F_GETFL).map_err(|e| ShimError::sys("fcntl pty", e))?;
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        fcntl(&fd, FcntlArg::F_SETFL(flags)).map_err(|e| ShimError::sys("fcntl pty", e))?;
        // SAFETY: the OwnedFd moves into the AsyncFd, which keeps it open and unchanged for as
        // long as it is registered.
        let fd = unsafe { AsyncFd::register(fd) }
            .map_err(|e| ShimError::io("register pty", "", e.into()))?;
        Ok(Pty { fd })
    }

    /// Reads; `Ok(0)` once the slave side is closed (EIO).
    pub async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard
                .try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(std::io::Error::from))
            {
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(e)) if e.raw_os_error() == Some(nix::libc::EIO) => return Ok(0),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `buf`.
    pub async fn write_all(&self, mut buf: &[u8]) -> std::io::Result<()> {
        while !buf.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard
                .try_io(|fd| nix::unistd::write(fd.get_ref(), buf).map_err(std::io::Error::from))
            {
                Ok(Ok(n)) => buf = &buf[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Sets the window size (TIOCSWINSZ).
    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let ws = Winsize {
            ws_row: u16::try_from(height).unwrap_or(u16::MAX),
            ws_col: u16::try_from(width).unwrap_or(u16::MAX),
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one `Winsize` through the pointer, which outlives the call,
        // on an fd we own.
        unsafe { set_winsize(self.fd.get_ref().as_raw_fd(), &ws) }
            .map(drop)
            .map_err(|e| ShimError::sys("resize pty", e))
    }
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;

    use nix::sys::socket::{sendmsg, ControlMessage};

    use super::*;

    #[tokio::test]
    async fn receives_a_pty_master_and_resizes_it() {
        let sock = ConsoleSocket::new().unwrap();
        let path = sock.path().to_owned();
        let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY).unwrap();
        let raw = master.as_raw_fd();
        let sender = tokio::task::spawn_blocking(move || {
            let s = std::os::unix::net::UnixStream::connect(&path).unwrap();
            let fds = [raw];
            sendmsg::<()>(
                s.as_raw_fd(),
                &[IoSlice::new(b"/dev/ptmx")],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                None,
            )
            .unwrap();
        });
        let fd = sock.receive_master().await.unwrap();
        sender.await.unwrap();
        let pty = Pty::new(fd).unwrap();
        pty.resize(80, 24).unwrap();
        drop(master);
    }
}
