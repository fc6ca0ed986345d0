//! [`SystemHandle::sock_group`]: making a [`SockGroup`] for a system's sockets.

use super::broadcast::SockGroup;
use super::transport::transport_of;
use crate::actor::SystemHandle;

impl SystemHandle {
    /// A new, empty socket group for this system's sockets: see [`SockGroup`].
    pub fn sock_group(&self) -> SockGroup {
        let transport = transport_of(&self.inner);
        SockGroup::new(transport.sock_table(), transport.clone().group_pollers())
    }
}
