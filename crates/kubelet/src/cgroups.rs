//! Pod cgroups: the agent asks containerd to put each pod under
//! `<cgroup-parent>/pod<uid>` (cgroupfs driver); runc removes the container cgroups, the
//! agent removes the pod's own directory once the sandbox is gone.

use std::path::Path;

/// The cgroup filesystem root.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Removes `<parent>/pod<uid>` from every cgroup hierarchy (v1: one per controller; v2: the
/// unified one). Best effort: a busy or missing directory is left alone.
pub fn remove_pod(parent: &str, uid: &str) {
    if parent.is_empty() || uid.is_empty() {
        return;
    }
    remove_pod_in(Path::new(CGROUP_ROOT), parent, uid);
}

/// [`remove_pod`] under `root` (tests use a temp dir).
pub fn remove_pod_in(root: &Path, parent: &str, uid: &str) {
    let rel = format!("{}/pod{uid}", parent.trim_matches('/'));
    let mut dirs = vec![root.join(&rel)];
    if let Ok(entries) = std::fs::read_dir(root) {
        dirs.extend(entries.filter_map(|e| e.ok()).map(|e| e.path().join(&rel)));
    }
    for d in dirs {
        if d.is_dir()
            && let Err(err) = std::fs::remove_dir(&d)
        {
            tracing::debug!(dir = %d.display(), ?err, "cannot remove pod cgroup");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_the_pod_dir_in_every_hierarchy() {
        let root = tempfile::tempdir().unwrap();
        for ctrl in ["cpu", "memory"] {
            std::fs::create_dir_all(root.path().join(ctrl).join("rkube/podu1")).unwrap();
            std::fs::create_dir_all(root.path().join(ctrl).join("rkube/podu2")).unwrap();
        }
        remove_pod_in(root.path(), "/rkube", "u1");
        for ctrl in ["cpu", "memory"] {
            assert!(!root.path().join(ctrl).join("rkube/podu1").exists());
            assert!(root.path().join(ctrl).join("rkube/podu2").exists());
        }
    }
}
