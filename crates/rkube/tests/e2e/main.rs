//! Black-box tests of the `rkube` binary, in one test binary (each test binary links the
//! whole dependency graph, which on two cores costs more than the tests themselves).
//!
//! Each module drives a real `rkube server` (started by [`common::Server`] on a free port in
//! a temp data dir, killed by PID on drop) with the real kubectl (1.33 and 1.27) and kube-rs.

#[path = "../common/mod.rs"]
mod common;

mod api;
mod apply;
mod controllers_deployment;
mod controllers_endpoints;
mod controllers_gc;
mod controllers_job;
mod controllers_node;
mod fuzz_decode;
mod kubelet;
mod openapi;
mod protobuf;
mod scheduler;
mod server_cli;
mod serviceaccount;
mod sim;
