//! Resource quantities as the scheduler counts them: CPU in millicores, memory and
//! ephemeral storage in bytes, everything else (extended resources, hugepages) as integers.
//!
//! [`parse_quantity`] reads Kubernetes' quantity syntax (`100m`, `1.5Gi`, `2e3`) and rounds
//! up, like upstream's `Quantity.MilliValue()`/`Value()`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// `cpu`.
pub const CPU: &str = "cpu";
/// `memory`.
pub const MEMORY: &str = "memory";
/// `ephemeral-storage`.
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
/// `pods`.
pub const PODS: &str = "pods";

/// CPU a container without a CPU request counts as when scoring (upstream: 100m).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Memory a container without a memory request counts as when scoring (upstream: 200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// A set of resource amounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resource {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage: i64,
    /// Pods a node allows (allocatable only).
    pub allowed_pods: i64,
    /// Extended resources, hugepages and the like, sorted by name.
    pub scalar: Vec<(String, i64)>,
}

impl Resource {
    /// The amount of a scalar resource (0 when absent).
    pub fn scalar(&self, name: &str) -> i64 {
        self.scalar
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v)
    }

    fn scalar_mut(&mut self, name: &str) -> &mut i64 {
        let i = match self.scalar.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => i,
            Err(i) => {
                self.scalar.insert(i, (name.to_string(), 0));
                i
            }
        };
        &mut self.scalar[i].1
    }

    /// The resources of a `requests`/`allocatable` map.
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Self {
        let mut r = Self::default();
        r.add_list(list);
        r
    }

    /// Adds the amounts of a resource map.
    pub fn add_list(&mut self, list: &BTreeMap<String, Quantity>) {
        for (name, q) in list {
            match name.as_str() {
                CPU => self.milli_cpu = self.milli_cpu.saturating_add(milli_value(q)),
                MEMORY => self.memory = self.memory.saturating_add(value(q)),
                EPHEMERAL_STORAGE => {
                    self.ephemeral_storage = self.ephemeral_storage.saturating_add(value(q))
                }
                PODS => self.allowed_pods = self.allowed_pods.saturating_add(value(q)),
                other if is_scalar_resource(other) => {
                    let v = value(q);
                    let slot = self.scalar_mut(other);
                    *slot = slot.saturating_add(v);
                }
                _ => {}
            }
        }
    }

    /// Adds `other`.
    pub fn add(&mut self, other: &Resource) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.allowed_pods += other.allowed_pods;
        for (n, v) in &other.scalar {
            *self.scalar_mut(n) += v;
        }
    }

    /// Subtracts `other`.
    pub fn sub(&mut self, other: &Resource) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.allowed_pods -= other.allowed_pods;
        for (n, v) in &other.scalar {
            *self.scalar_mut(n) -= v;
        }
    }

    /// Raises every amount to at least `other`'s.
    pub fn set_max(&mut self, other: &Resource) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        self.allowed_pods = self.allowed_pods.max(other.allowed_pods);
        for (n, v) in &other.scalar {
            let slot = self.scalar_mut(n);
            *slot = (*slot).max(*v);
        }
    }

    /// No CPU, memory, storage or scalar resources requested.
    pub fn is_empty_request(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.iter().all(|(_, v)| *v == 0)
    }
}

/// Resources the scheduler counts beyond cpu/memory/storage: extended resources
/// (`example.com/gpu`), hugepages, `kubernetes.io/`-prefixed native ones, attachable volumes.
pub fn is_scalar_resource(name: &str) -> bool {
    name.starts_with("hugepages-") || name.starts_with("attachable-volumes-") || name.contains('/')
}

/// A pod's requests the way upstream's `resource.PodRequests` counts them: the sum of the
/// containers (and sidecars, restartable init containers), or the largest init container
/// step if larger, plus the pod overhead. With `non_zero`, a container that leaves out its
/// CPU or memory request counts the scoring defaults (100m, 200 MiB).
pub fn pod_requests(pod: &Pod, non_zero: bool) -> Resource {
    let Some(spec) = pod.spec.as_ref() else {
        return Resource::default();
    };
    let mut reqs = Resource::default();
    for c in &spec.containers {
        reqs.add(&container_requests(c, non_zero));
    }
    let mut restartable = Resource::default();
    let mut init_max = Resource::default();
    for c in spec.init_containers.iter().flatten() {
        let mut step = container_requests(c, non_zero);
        if c.restart_policy.as_deref() == Some("Always") {
            reqs.add(&step);
            restartable.add(&step);
            step = restartable.clone();
        } else {
            step.add(&restartable);
        }
        init_max.set_max(&step);
    }
    reqs.set_max(&init_max);
    if let Some(overhead) = &spec.overhead {
        reqs.add_list(overhead);
    }
    reqs
}

fn container_requests(c: &Container, non_zero: bool) -> Resource {
    let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let mut r = requests.map(Resource::from_list).unwrap_or_default();
    if non_zero {
        if requests.is_none_or(|m| !m.contains_key(CPU)) {
            r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if requests.is_none_or(|m| !m.contains_key(MEMORY)) {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
    }
    r
}

/// A quantity in thousandths, rounded up (`100m` → 100, `1` → 1000).
pub fn milli_value(q: &Quantity) -> i64 {
    parse_quantity(&q.0, 3).unwrap_or(0)
}

/// A quantity as an integer, rounded up (`1Ki` → 1024, `1.5` → 2).
pub fn value(q: &Quantity) -> i64 {
    parse_quantity(&q.0, 0).unwrap_or(0)
}

/// Parses a Kubernetes quantity and returns `value × 10^scale`, rounded up (towards +∞) and
/// saturated to `i64`. `None` when the text is not a quantity.
pub fn parse_quantity(text: &str, scale: i32) -> Option<i64> {
    let s = text.trim();
    let (negative, s) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    if number.is_empty() || number == "." {
        return None;
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if frac_part.contains('.') {
        return None;
    }
    let mut mantissa: i128 = 0;
    let mut exp10: i32 = -(frac_part.len() as i32);
    for c in int_part.bytes().chain(frac_part.bytes()) {
        let digit = i128::from(c - b'0');
        match mantissa.checked_mul(10).and_then(|m| m.checked_add(digit)) {
            Some(m) if m < 1i128 << 100 => mantissa = m,
            // Too many digits: drop the rest of the precision.
            _ => exp10 += 1,
        }
    }
    let mut pow2: u32 = 0;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => pow2 = 10,
        "Mi" => pow2 = 20,
        "Gi" => pow2 = 30,
        "Ti" => pow2 = 40,
        "Pi" => pow2 = 50,
        "Ei" => pow2 = 60,
        other => {
            let exp = other.strip_prefix(['e', 'E'])?;
            exp10 += exp.parse::<i32>().ok()?;
        }
    }
    exp10 += scale;
    let scaled = scale_up(mantissa, exp10, pow2, negative);
    Some(scaled)
}

fn scale_up(mantissa: i128, exp10: i32, pow2: u32, negative: bool) -> i64 {
    if mantissa == 0 {
        return 0;
    }
    let saturated = if negative { i64::MIN } else { i64::MAX };
    let mut m = mantissa;
    for _ in 0..pow2 {
        m = match m.checked_mul(2) {
            Some(v) => v,
            None => return saturated,
        };
    }
    if exp10 >= 0 {
        for _ in 0..exp10 {
            m = match m.checked_mul(10) {
                Some(v) if v <= i128::from(i64::MAX) => v,
                _ => return saturated,
            };
        }
        let Ok(v) = i64::try_from(m) else {
            return saturated;
        };
        if negative { -v } else { v }
    } else {
        let mut divisor: i128 = 1;
        for _ in 0..(-exp10) {
            divisor = match divisor.checked_mul(10) {
                Some(d) => d,
                // The value is below one unit: rounds to 1 (up) or 0 (negative, up).
                None => return if negative { 0 } else { 1 },
            };
        }
        let q = m / divisor;
        let r = m % divisor;
        let v = i64::try_from(q).unwrap_or(i64::MAX);
        if negative {
            -v
        } else if r != 0 {
            v.saturating_add(1)
        } else {
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        let cases: &[(&str, i32, Option<i64>)] = &[
            ("100m", 3, Some(100)),
            ("1", 3, Some(1000)),
            ("0.5", 3, Some(500)),
            ("1.5", 0, Some(2)),
            ("1Ki", 0, Some(1024)),
            ("1Gi", 0, Some(1 << 30)),
            ("200Mi", 0, Some(200 << 20)),
            ("1G", 0, Some(1_000_000_000)),
            ("2e3", 0, Some(2000)),
            ("1E", 0, Some(1_000_000_000_000_000_000)),
            ("1n", 3, Some(1)),
            ("0", 3, Some(0)),
            ("-1", 0, Some(-1)),
            ("abc", 0, None),
            ("", 0, None),
            ("1Zi", 0, None),
            ("10Ei", 0, Some(i64::MAX)),
        ];
        for (text, scale, want) in cases {
            assert_eq!(
                parse_quantity(text, *scale),
                *want,
                "{text} at scale {scale}"
            );
        }
    }

    #[test]
    fn scalar_resources_sorted_and_summed() {
        let mut r = Resource::default();
        let list: BTreeMap<String, Quantity> = [
            ("example.com/gpu".to_string(), Quantity("2".into())),
            ("cpu".to_string(), Quantity("250m".into())),
            ("hugepages-2Mi".to_string(), Quantity("4Mi".into())),
            ("storage".to_string(), Quantity("1".into())),
        ]
        .into();
        r.add_list(&list);
        r.add_list(&list);
        assert_eq!(r.milli_cpu, 500);
        assert_eq!(r.scalar("example.com/gpu"), 4);
        assert_eq!(r.scalar("hugepages-2Mi"), 8 << 20);
        assert_eq!(r.scalar("storage"), 0);
        assert_eq!(r.scalar.len(), 2);
    }
}
