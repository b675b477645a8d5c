//! Container resources: Kubernetes quantities and the CRI Linux resources upstream derives
//! from a container's requests and limits (cpu shares from the request, CFS quota from the
//! limit, the memory limit), which runc writes into the container's cgroup.

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::Container;

/// CFS period (upstream's default, 100 ms).
pub const CPU_PERIOD: i64 = 100_000;
/// Smallest cpu.shares (upstream: 2).
pub const MIN_SHARES: i64 = 2;

/// Parses a Kubernetes quantity (`500m`, `1.5`, `64Mi`, `1G`, `1e3`) into its value.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let n: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * factor)
}

fn get(c: &Container, limits: bool, key: &str) -> Option<f64> {
    let r = c.resources.as_ref()?;
    let map = if limits {
        r.limits.as_ref()
    } else {
        r.requests.as_ref()
    }?;
    parse_quantity(&map.get(key)?.0)
}

/// The CRI resources of `c` (upstream's `calculateLinuxResources`).
pub fn linux_resources(c: &Container) -> cri::LinuxContainerResources {
    let cpu_request = get(c, false, "cpu").or_else(|| get(c, true, "cpu"));
    let cpu_limit = get(c, true, "cpu");
    let memory_limit = get(c, true, "memory");
    let milli = |cores: f64| (cores * 1000.0).round() as i64;
    let cpu_shares = cpu_request.map_or(MIN_SHARES, |r| (milli(r) * 1024 / 1000).max(MIN_SHARES));
    let (cpu_quota, cpu_period) = match cpu_limit {
        // 1 ms is the kernel's minimum quota.
        Some(l) => ((milli(l) * CPU_PERIOD / 1000).max(1000), CPU_PERIOD),
        None => (0, 0),
    };
    cri::LinuxContainerResources {
        cpu_period,
        cpu_quota,
        cpu_shares,
        memory_limit_in_bytes: memory_limit.map_or(0, |m| m as i64),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1.5"), Some(1.5));
        assert_eq!(parse_quantity("64Mi"), Some(64.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("1G"), Some(1e9));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("12Q"), None);
        assert_eq!(parse_quantity("abc"), None);
    }

    fn container(resources: serde_json::Value) -> Container {
        serde_json::from_value(serde_json::json!({"name": "c", "resources": resources})).unwrap()
    }

    #[test]
    fn resources_follow_upstream() {
        let r = linux_resources(&container(serde_json::json!({})));
        assert_eq!(
            (r.cpu_shares, r.cpu_quota, r.memory_limit_in_bytes),
            (2, 0, 0)
        );
        let r = linux_resources(&container(serde_json::json!({
            "requests": {"cpu": "250m"},
            "limits": {"cpu": "500m", "memory": "64Mi"},
        })));
        assert_eq!(r.cpu_shares, 256);
        assert_eq!((r.cpu_quota, r.cpu_period), (50_000, CPU_PERIOD));
        assert_eq!(r.memory_limit_in_bytes, 64 * 1024 * 1024);
        // A limit without a request: the request is the limit.
        let r = linux_resources(&container(serde_json::json!({"limits": {"cpu": "1"}})));
        assert_eq!(r.cpu_shares, 1024);
    }
}
