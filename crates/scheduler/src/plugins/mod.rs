//! The in-tree plugins of the default profile, one module each (`NAME`, reason constants, a
//! pure `fits()`-style helper, `events_to_register()`, table-driven tests). [`registry`] is
//! the only place that lists them all; [`names`] holds every plugin name.

pub mod defaultpreemption;
pub mod imagelocality;
pub mod interpodaffinity;
pub mod names;
pub mod nodeaffinity;
pub mod nodename;
pub mod nodeports;
pub mod noderesources;
pub mod nodeunschedulable;
pub mod podtopologyspread;
pub mod queuesort;
pub mod registry;
pub mod schedulinggates;
pub mod tainttoleration;
