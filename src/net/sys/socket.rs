//! TCP sockets: creation, accept, non-blocking connect, vectored reads and writes.

use super::{retry_eintr, syscall};
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::{MaybeUninit, size_of};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// The most iovecs one `readv`/`writev` takes on Linux (`UIO_MAXIOV`).
pub(crate) const MAX_IOV: usize = 1024;

fn to_sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn from_sockaddr(storage: &libc::sockaddr_storage) -> io::Result<SocketAddr> {
    match storage.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: &libc::sockaddr_in =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Ok(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Ok(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unsupported address family",
        )),
    }
}

fn new_tcp_socket(addr: &SocketAddr) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let fd = syscall!(socket(
        family,
        libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        0
    ))?;
    // SAFETY: socket returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_int_opt(fd: BorrowedFd<'_>, level: i32, name: i32, value: i32) -> io::Result<()> {
    syscall!(setsockopt(
        fd.as_raw_fd(),
        level,
        name,
        (&value as *const i32).cast(),
        size_of::<i32>() as libc::socklen_t
    ))
    .map(drop)
}

/// Creates a listening, non-blocking TCP socket with `SO_REUSEADDR`.
pub(crate) fn listen_tcp(addr: &SocketAddr, backlog: i32) -> io::Result<OwnedFd> {
    let fd = new_tcp_socket(addr)?;
    set_int_opt(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    let (storage, len) = to_sockaddr(addr);
    syscall!(bind(
        fd.as_raw_fd(),
        (&storage as *const libc::sockaddr_storage).cast(),
        len
    ))?;
    syscall!(listen(fd.as_raw_fd(), backlog))?;
    Ok(fd)
}

/// Accepts one connection: `Ok(None)` when none is waiting.
pub(crate) fn accept(listener: BorrowedFd<'_>) -> io::Result<Option<(OwnedFd, SocketAddr)>> {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let res = retry_eintr(|| {
        syscall!(accept4(
            listener.as_raw_fd(),
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC
        ))
    });
    match res {
        Ok(fd) => {
            // SAFETY: accept4 returned a fresh descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let peer = from_sockaddr(&storage)?;
            Ok(Some((fd, peer)))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        // The peer gave up between SYN and accept: nothing to hand out, not a listener fault.
        Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Starts a non-blocking connect. Returns the socket and whether it is connected already
/// (otherwise wait for writability, then ask [`take_socket_error`]).
pub(crate) fn connect_nonblocking(addr: &SocketAddr) -> io::Result<(OwnedFd, bool)> {
    let fd = new_tcp_socket(addr)?;
    let (storage, len) = to_sockaddr(addr);
    match syscall!(connect(
        fd.as_raw_fd(),
        (&storage as *const libc::sockaddr_storage).cast(),
        len
    )) {
        Ok(_) => Ok((fd, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok((fd, false)),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok((fd, false)),
        Err(e) => Err(e),
    }
}

/// Reads and clears `SO_ERROR`: the outcome of a non-blocking connect, or a pending error.
pub(crate) fn take_socket_error(fd: BorrowedFd<'_>) -> io::Result<Option<io::Error>> {
    let mut value: i32 = 0;
    let mut len = size_of::<i32>() as libc::socklen_t;
    syscall!(getsockopt(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_ERROR,
        (&mut value as *mut i32).cast(),
        &mut len
    ))?;
    Ok(if value == 0 {
        None
    } else {
        Some(io::Error::from_raw_os_error(value))
    })
}

/// Sets `TCP_NODELAY`: packets are written whole, so Nagle's delay only adds latency.
pub(crate) fn set_nodelay(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, on as i32)
}

/// One `read` into spare capacity; returns the byte count (0 is end of stream).
pub(crate) fn recv_into(fd: BorrowedFd<'_>, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
    retry_eintr(|| {
        syscall!(read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())).map(|n| n as usize)
    })
}

/// One `readv`; returns the byte count (0 is end of stream).
pub(crate) fn readv(fd: BorrowedFd<'_>, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
    let cnt = bufs.len().min(MAX_IOV) as i32;
    // IoSliceMut is ABI-compatible with iovec on Unix.
    retry_eintr(|| {
        syscall!(readv(fd.as_raw_fd(), bufs.as_mut_ptr().cast(), cnt)).map(|n| n as usize)
    })
}

/// One gathered write (`sendmsg` with `MSG_NOSIGNAL`, so a closed peer is an error, not
/// SIGPIPE); a single buffer goes through plain `send`, which skips the message header.
pub(crate) fn writev(fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    if let [one] = bufs {
        return retry_eintr(|| {
            syscall!(send(
                fd.as_raw_fd(),
                one.as_ptr().cast(),
                one.len(),
                libc::MSG_NOSIGNAL
            ))
            .map(|n| n as usize)
        });
    }
    let cnt = bufs.len().min(MAX_IOV);
    retry_eintr(|| {
        // SAFETY: msghdr is plain old data; all-zero is a valid value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        // IoSlice is ABI-compatible with iovec on Unix; sendmsg does not write through it.
        msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = cnt as _;
        syscall!(sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)).map(|n| n as usize)
    })
}

/// Half-closes the write side; the peer sees end of stream after the queued bytes.
pub(crate) fn shutdown_write(fd: BorrowedFd<'_>) -> io::Result<()> {
    syscall!(shutdown(fd.as_raw_fd(), libc::SHUT_WR)).map(drop)
}

fn name_of(
    fd: BorrowedFd<'_>,
    f: unsafe extern "C" fn(i32, *mut libc::sockaddr, *mut libc::socklen_t) -> i32,
) -> io::Result<SocketAddr> {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `f` is getpeername or getsockname; storage and len describe a live buffer.
    let res = unsafe {
        f(
            fd.as_raw_fd(),
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if res == -1 {
        return Err(io::Error::last_os_error());
    }
    from_sockaddr(&storage)
}

/// The local address of a socket (the port a `:0` listener got).
pub(crate) fn local_addr(fd: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    name_of(fd, libc::getsockname)
}

/// Whether an error means the process or the system is short of a resource (descriptors,
/// buffers, memory), so that retrying at once would fail again; as opposed to one
/// connection failing.
pub(crate) fn is_out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
