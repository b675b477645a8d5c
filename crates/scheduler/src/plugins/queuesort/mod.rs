//! PrioritySort: the active queue pops the highest priority first, then the pod that has
//! waited longest.

use crate::framework::interface::QueuedPodRef;
use crate::framework::{Plugin, QueueSortPlugin};

/// The plugin name.
pub const NAME: &str = super::names::PRIORITY_SORT;

/// The PrioritySort plugin.
#[derive(Debug, Default)]
pub struct PrioritySort;

/// Whether the pod with (`priority_a`, `seq_a`) goes before (`priority_b`, `seq_b`).
pub fn less(priority_a: i32, seq_a: u64, priority_b: i32, seq_b: u64) -> bool {
    priority_a > priority_b || (priority_a == priority_b && seq_a < seq_b)
}

impl Plugin for PrioritySort {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_queue_sort(&self) -> Option<&dyn QueueSortPlugin> {
        Some(self)
    }
}

impl QueueSortPlugin for PrioritySort {
    fn less(&self, a: &QueuedPodRef<'_>, b: &QueuedPodRef<'_>) -> bool {
        less(a.pod.priority, a.timestamp, b.pod.priority, b.timestamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_priority_then_older_first() {
        let cases = [
            ((10, 5), (1, 1), true),
            ((1, 1), (10, 5), false),
            ((1, 1), (1, 2), true),
            ((1, 2), (1, 1), false),
        ];
        for ((pa, sa), (pb, sb), want) in cases {
            assert_eq!(less(pa, sa, pb, sb), want, "{pa},{sa} vs {pb},{sb}");
        }
    }
}
