//! Spawning, registering and looking up actors through a [`SystemHandle`].

use super::blocking;
use super::cell::{self, Addr, Placement, Supervision};
use super::system::{RegistryError, SystemHandle};
use super::{Actor, RestartPolicy};

/// Options of one spawn.
#[derive(Clone, Debug, Default)]
pub struct SpawnOptions {
    /// Mailbox capacity: `None` takes the system default; `Some(0)` is unbounded.
    pub mailbox_capacity: Option<usize>,
    /// Register the actor under this name (freed when it stops).
    pub name: Option<String>,
    /// Run the actor on a thread of its own, for handlers that block (see
    /// [`SystemHandle::spawn_dedicated`]).
    pub dedicated_thread: bool,
}

impl SpawnOptions {
    /// Sets the mailbox capacity.
    #[must_use]
    pub fn mailbox_capacity(mut self, n: usize) -> SpawnOptions {
        self.mailbox_capacity = Some(n);
        self
    }

    /// Sets the name to register.
    #[must_use]
    pub fn name(mut self, name: &str) -> SpawnOptions {
        self.name = Some(name.to_owned());
        self
    }

    /// Runs the actor on a thread of its own (see [`SystemHandle::spawn_dedicated`]).
    #[must_use]
    pub fn dedicated_thread(mut self) -> SpawnOptions {
        self.dedicated_thread = true;
        self
    }
}

impl SystemHandle {
    /// Spawns an actor; its `started` runs on a worker before its first message.
    pub fn spawn<A: Actor>(&self, actor: A) -> Addr<A> {
        cell::spawn(&self.inner, actor, Supervision::None, Placement::default())
            .unwrap_or_else(|_| unreachable!("an unnamed spawn cannot fail"))
    }

    /// Spawns an actor with options.
    ///
    /// # Errors
    /// [`RegistryError::NameTaken`] if the name is held by another actor,
    /// [`RegistryError::NoThread`] if a dedicated thread could not be started; the actor is
    /// not spawned then.
    pub fn spawn_with<A: Actor>(
        &self,
        actor: A,
        opts: SpawnOptions,
    ) -> Result<Addr<A>, RegistryError> {
        let placement = Placement {
            capacity: opts.mailbox_capacity,
            name: opts.name.as_deref(),
            ..Placement::default()
        };
        if opts.dedicated_thread {
            return blocking::spawn_dedicated(self, actor, Supervision::None, placement);
        }
        cell::spawn(&self.inner, actor, Supervision::None, placement)
    }

    /// Spawns a supervised actor: when a handler panics, the actor is rebuilt in place by
    /// `factory` (same address and mailbox) as long as `policy` allows, and stopped with
    /// [`StopReason::RestartLimit`](super::StopReason::RestartLimit) after that.
    pub fn spawn_supervised<A: Actor>(
        &self,
        mut factory: impl FnMut() -> A + Send + 'static,
        policy: RestartPolicy,
    ) -> Addr<A> {
        let first = factory();
        let supervision = Supervision::Restart(Box::new(factory), policy);
        cell::spawn(&self.inner, first, supervision, Placement::default())
            .unwrap_or_else(|_| unreachable!("an unnamed spawn cannot fail"))
    }

    /// Registers `addr` under `name` until the actor stops.
    ///
    /// # Errors
    /// [`RegistryError::NameTaken`] if another actor holds the name (a duplicate is refused,
    /// never replaced), [`RegistryError::ActorStopped`] if the actor has stopped.
    pub fn register<A: Actor>(&self, name: &str, addr: &Addr<A>) -> Result<(), RegistryError> {
        cell::register(&self.inner, name, addr)
    }

    /// Looks up an actor of type `A` by name.
    pub fn lookup<A: Actor>(&self, name: &str) -> Option<Addr<A>> {
        cell::lookup(&self.inner, name)
    }
}
