//! The store conformance suite, run against both backends: the embedded store in a temp dir,
//! and a real etcd started on free loopback ports for each test.

use std::sync::Arc;

use rkube_store::Store;

mod embedded {
    use super::*;
    use rkube_store::embedded::EmbeddedStore;

    async fn make() -> (Arc<dyn Store>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        (Arc::new(store), dir)
    }

    rkube_store::conformance_tests!(make());
}

mod etcd {
    use super::*;
    use rkube_store::etcd::EtcdStore;
    use rkube_store::testing::EtcdProcess;

    async fn make() -> (Arc<dyn Store>, EtcdProcess) {
        let etcd = EtcdProcess::start().expect("start etcd (is etcd-server installed?)");
        let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint))
            .await
            .unwrap();
        (Arc::new(store), etcd)
    }

    rkube_store::conformance_tests!(make());
}
