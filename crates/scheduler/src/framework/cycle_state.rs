//! Per-cycle plugin data: what a plugin computes at PreFilter/PreScore and reads back at
//! Filter/Score, keyed by the data's type (each plugin owns its state types).

use std::any::{Any, TypeId};

/// Data a plugin stores in the [`CycleState`]. `clone_box` lets preemption evaluate each
/// candidate node on its own copy.
pub trait StateData: Any + Send + Sync {
    /// A copy of this data.
    fn clone_box(&self) -> Box<dyn StateData>;
    /// Upcast for downcasting.
    fn as_any(&self) -> &dyn Any;
    /// Upcast for downcasting mutably.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any + Send + Sync + Clone> StateData for T {
    fn clone_box(&self) -> Box<dyn StateData> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Typed storage for one scheduling cycle. Reads and writes are by type, so two plugins
/// cannot collide; a handful of entries per cycle, kept in a small vector.
#[derive(Default)]
pub struct CycleState {
    entries: Vec<(TypeId, Box<dyn StateData>)>,
    /// Plugins whose PreFilter returned Skip (their Filter is not run).
    pub(crate) skip_filter: u64,
    /// Plugins whose PreScore returned Skip (their Score is not run).
    pub(crate) skip_score: u64,
}

impl CycleState {
    /// An empty state.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value`, replacing an earlier value of the same type.
    pub fn write<T: StateData + Clone>(&mut self, value: T) {
        let id = TypeId::of::<T>();
        if let Some(slot) = self.entries.iter_mut().find(|(t, _)| *t == id) {
            slot.1 = Box::new(value);
        } else {
            self.entries.push((id, Box::new(value)));
        }
    }

    /// The stored value of type `T`.
    pub fn read<T: StateData>(&self) -> Option<&T> {
        let id = TypeId::of::<T>();
        self.entries
            .iter()
            .find(|(t, _)| *t == id)
            .and_then(|(_, v)| (**v).as_any().downcast_ref::<T>())
    }

    /// The stored value of type `T`, mutably.
    pub fn read_mut<T: StateData>(&mut self) -> Option<&mut T> {
        let id = TypeId::of::<T>();
        self.entries
            .iter_mut()
            .find(|(t, _)| *t == id)
            .and_then(|(_, v)| (**v).as_any_mut().downcast_mut::<T>())
    }
}

impl Clone for CycleState {
    fn clone(&self) -> Self {
        Self {
            entries: self
                .entries
                .iter()
                .map(|(t, v)| (*t, (**v).clone_box()))
                .collect(),
            skip_filter: self.skip_filter,
            skip_score: self.skip_score,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct A(u32);
    #[derive(Clone, Debug, PartialEq)]
    struct B(&'static str);

    #[test]
    fn typed_reads_writes_and_clones() {
        let mut s = CycleState::new();
        s.write(A(1));
        s.write(B("x"));
        s.write(A(2));
        assert_eq!(s.read::<A>(), Some(&A(2)));
        let mut c = s.clone();
        c.read_mut::<A>().unwrap().0 = 5;
        assert_eq!(s.read::<A>(), Some(&A(2)));
        assert_eq!(c.read::<A>(), Some(&A(5)));
        assert_eq!(c.read::<B>(), Some(&B("x")));
    }
}
