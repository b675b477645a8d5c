//! The pod network: a CNI conflist (bridge + host-local over the node's pod CIDR) written
//! where containerd's CRI plugin reads it. containerd adds the loopback plugin itself and
//! runs the plugins on RunPodSandbox / StopPodSandbox.
//!
//! No masquerade (`ipMasq: false`): pod traffic never leaves the machine in tests.

use std::path::{Path, PathBuf};

use serde_json::json;

/// The conflist's file name.
pub const CONFLIST: &str = "10-rkube.conflist";

/// Settings of the pod network.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// The bridge (at most 15 characters).
    pub bridge: String,
    /// The node's pod CIDR, e.g. `10.42.0.0/24`.
    pub pod_cidr: String,
    /// Where host-local keeps its allocations.
    pub ipam_dir: PathBuf,
}

/// The conflist JSON.
pub fn conflist(config: &NetworkConfig) -> serde_json::Value {
    json!({
        "cniVersion": "0.4.0",
        "name": "rkube",
        "plugins": [{
            "type": "bridge",
            "bridge": config.bridge,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": config.pod_cidr}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": config.ipam_dir,
            },
        }],
    })
}

/// Checks a bridge name (Linux interface names are at most 15 bytes).
pub fn validate_bridge(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
        return Err(format!(
            "invalid bridge name {name:?}: 1 to 15 characters, no '/' or spaces"
        ));
    }
    Ok(())
}

/// Writes the conflist into `dir` (atomically: containerd watches the dir).
pub fn write(dir: &Path, config: &NetworkConfig) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    std::fs::create_dir_all(&config.ipam_dir)?;
    let path = dir.join(CONFLIST);
    let tmp = dir.join(".rkube.conflist.tmp");
    let text = serde_json::to_string_pretty(&conflist(config)).expect("json");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflist_uses_the_pod_cidr_and_bridge() {
        let dir = tempfile::tempdir().unwrap();
        let config = NetworkConfig {
            bridge: "rkt1".into(),
            pod_cidr: "10.99.3.0/24".into(),
            ipam_dir: dir.path().join("ipam"),
        };
        let path = write(&dir.path().join("net.d"), &config).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let bridge = &v["plugins"][0];
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["bridge"], "rkt1");
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.99.3.0/24");
        assert!(dir.path().join("ipam").is_dir());
    }

    #[test]
    fn bridge_names_are_checked() {
        assert!(validate_bridge("rkube0").is_ok());
        assert!(validate_bridge("").is_err());
        assert!(validate_bridge("a-very-long-bridge-name").is_err());
    }
}
