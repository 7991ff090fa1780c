//! Driving a [`Sender`] from tokio: tokio's sockets are non-blocking, so the
//! sender advances until `EAGAIN`, then awaits writability through the
//! reactor instead of blocking a worker thread in `poll`.

use std::future::Future;
use std::io;
use std::os::fd::AsFd;

use tokio::io::Interest;

use crate::counters::Counters;
use crate::error::TransferError;
use crate::sender::{Message, Progress, Sender};

/// A tokio stream socket the sender can write to.
pub trait AsyncStreamSocket: AsFd {
    fn writable(&self) -> impl Future<Output = io::Result<()>>;
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
}

impl AsyncStreamSocket for tokio::net::TcpStream {
    fn writable(&self) -> impl Future<Output = io::Result<()>> {
        tokio::net::TcpStream::writable(self)
    }
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        tokio::net::TcpStream::try_io(self, interest, f)
    }
}

impl AsyncStreamSocket for tokio::net::UnixStream {
    fn writable(&self) -> impl Future<Output = io::Result<()>> {
        tokio::net::UnixStream::writable(self)
    }
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        tokio::net::UnixStream::try_io(self, interest, f)
    }
}

impl Sender {
    /// Sends a whole message through a tokio socket, yielding to the runtime
    /// whenever the socket is full. Returns what the message cost.
    pub async fn send_async<S: AsyncStreamSocket>(
        &mut self,
        socket: &S,
        msg: &mut Message<'_>,
    ) -> Result<Counters, TransferError> {
        loop {
            socket
                .writable()
                .await
                .map_err(|source| TransferError::Syscall {
                    call: "epoll_wait",
                    source,
                })?;
            let mut failure = None;
            let attempt = socket.try_io(Interest::WRITABLE, || {
                match self.advance(socket.as_fd(), msg) {
                    Ok(Progress::Done) => Ok(true),
                    // Tells tokio the readiness was used up.
                    Ok(Progress::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
                    Err(e) => {
                        failure = Some(e);
                        Ok(false)
                    }
                }
            });
            if let Some(e) = failure {
                return Err(e);
            }
            if let Ok(true) = attempt {
                return Ok(*msg.counters());
            }
        }
    }
}
