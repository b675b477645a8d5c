//! Service ClusterIP and NodePort allocation.
//!
//! Every allocated IP and port is a store key of its own (`/registry/ranges/serviceips/IP`,
//! `/registry/ranges/servicenodeports/PORT`), claimed with a "key absent" condition in the
//! same transaction that writes the Service, and deleted in the transaction that deletes it.
//! So two concurrent creates can never get the same IP, also with several API servers on one
//! etcd, no allocation outlives its Service, and a write touches only the keys it claims —
//! unlike upstream's former design of one bitmap object rewritten on every allocation.
//!
//! Dynamic IPs are drawn at random, preferring the upper part of the range as upstream does,
//! so that the lower "static band" stays free for addresses users pick themselves.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{Value, json};

use crate::status::{ApiError, ApiResult, Cause};

/// Where the claim keys live.
const IP_PREFIX: &str = "/registry/ranges/serviceips/";
const PORT_PREFIX: &str = "/registry/ranges/servicenodeports/";

/// An IP range in CIDR notation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cidr {
    base: u128,
    host_bits: u32,
    v6: bool,
    text: String,
}

impl Cidr {
    /// Parses `10.43.0.0/16` or `fd00::/108`; needs at least two host bits.
    pub fn parse(text: &str) -> Result<Self, String> {
        let invalid = || format!("invalid CIDR {text:?}");
        let (addr, prefix) = text.trim().split_once('/').ok_or_else(invalid)?;
        let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
        let prefix: u32 = prefix.parse().map_err(|_| invalid())?;
        let (bits, v6, value) = match addr {
            IpAddr::V4(a) => (32, false, u128::from(u32::from(a))),
            IpAddr::V6(a) => (128, true, u128::from(a)),
        };
        if prefix > bits - 2 {
            return Err(format!("{text:?}: the range is too small for services"));
        }
        let host_bits = bits - prefix;
        let base = value & !((1u128 << host_bits) - 1);
        Ok(Self {
            base,
            host_bits,
            v6,
            text: text.trim().to_owned(),
        })
    }

    /// `IPv4` or `IPv6`, as `spec.ipFamilies` spells it.
    pub fn family(&self) -> &'static str {
        if self.v6 { "IPv6" } else { "IPv4" }
    }

    /// Usable offsets are `1..=max_offset` (no network address, no IPv4 broadcast); capped so
    /// that huge IPv6 ranges stay manageable, as upstream caps them.
    fn max_offset(&self) -> u128 {
        let size = 1u128 << self.host_bits.min(20);
        if self.v6 { size - 1 } else { size - 2 }
    }

    fn addr(&self, offset: u128) -> IpAddr {
        let value = self.base + offset;
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(value))
        } else {
            IpAddr::V4(Ipv4Addr::from(value as u32))
        }
    }

    fn offset_of(&self, ip: IpAddr) -> Option<u128> {
        let value = match (ip, self.v6) {
            (IpAddr::V4(a), false) => u128::from(u32::from(a)),
            (IpAddr::V6(a), true) => u128::from(a),
            _ => return None,
        };
        let offset = value.checked_sub(self.base)?;
        (1..=self.max_offset()).contains(&offset).then_some(offset)
    }
}

/// The ranges Services draw from (`--service-cidr`, `--service-node-port-range`).
#[derive(Debug, Clone)]
pub struct ServiceRanges {
    /// ClusterIPs.
    pub cidr: Cidr,
    /// NodePorts, inclusive.
    pub node_ports: (u16, u16),
}

impl Default for ServiceRanges {
    fn default() -> Self {
        Self::parse("10.43.0.0/16", "30000-32767").expect("valid defaults")
    }
}

impl ServiceRanges {
    /// Parses the flags. Of a dual-stack `--service-cidr` the first range is used.
    pub fn parse(service_cidr: &str, node_port_range: &str) -> Result<Self, String> {
        let first = service_cidr.split(',').next().unwrap_or("");
        let cidr = Cidr::parse(first)?;
        let bad = || format!("invalid node port range {node_port_range:?}: want FROM-TO");
        let (from, to) = node_port_range.split_once('-').ok_or_else(bad)?;
        let (from, to): (u16, u16) = (
            from.trim().parse().map_err(|_| bad())?,
            to.trim().parse().map_err(|_| bad())?,
        );
        if from == 0 || from > to {
            return Err(bad());
        }
        Ok(Self {
            cidr,
            node_ports: (from, to),
        })
    }

    /// The first IP of the range: the `kubernetes` Service's.
    pub fn first_ip(&self) -> IpAddr {
        self.cidr.addr(1)
    }
}

/// A key a Service write must claim.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The store key.
    pub key: Vec<u8>,
    /// Whether the user chose the value (a clash is then their error, else we retry).
    pub chosen_by_user: bool,
    /// The field it came from, for the error.
    field: String,
    value: Value,
    what: &'static str,
}

impl Claim {
    /// The 422 for a user-chosen value someone else holds.
    pub fn taken(&self, name: &str) -> ApiError {
        ApiError::invalid(
            "",
            "Service",
            name,
            vec![Cause::invalid(
                self.field.clone(),
                &self.value,
                format!("provided {} is already allocated", self.what),
            )],
        )
    }
}

/// What a Service write claims and gives back.
#[derive(Debug, Clone, Default)]
pub struct Claims {
    /// Keys that must be absent and are created.
    pub claim: Vec<Claim>,
    /// Keys deleted.
    pub release: Vec<Vec<u8>>,
}

impl Claims {
    /// Whether the write touches no allocation.
    pub fn is_empty(&self) -> bool {
        self.claim.is_empty() && self.release.is_empty()
    }
}

fn ip_key(ip: &str) -> Vec<u8> {
    format!("{IP_PREFIX}{ip}").into_bytes()
}

fn port_key(port: u16) -> Vec<u8> {
    format!("{PORT_PREFIX}{port}").into_bytes()
}

/// The allocated ClusterIP of a Service (none for headless or ExternalName).
fn allocated_ip(svc: &Value) -> Option<&str> {
    svc.pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .filter(|ip| !ip.is_empty() && *ip != "None")
}

fn service_type(svc: &Value) -> &str {
    svc.pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
}

fn wants_node_ports(svc: &Value) -> bool {
    match service_type(svc) {
        "NodePort" => true,
        "LoadBalancer" => svc.pointer("/spec/allocateLoadBalancerNodePorts") != Some(&json!(false)),
        _ => false,
    }
}

fn node_ports(svc: &Value) -> BTreeSet<u16> {
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
        .filter_map(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .collect()
}

/// Every key a stored Service holds (released when it is deleted).
pub fn held_keys(svc: &Value) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = allocated_ip(svc).map(ip_key).into_iter().collect();
    keys.extend(node_ports(svc).into_iter().map(port_key));
    keys
}

/// On update, values the client left out (a manifest without `clusterIP` or `nodePort`,
/// as `kubectl apply` and `replace` send) are kept from the stored Service, as upstream
/// does, so that they neither change nor trip the immutability check.
pub fn keep_allocated(old: &Value, new: &mut Value) {
    if service_type(new) != "ExternalName"
        && new
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        && let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut)
    {
        for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if let Some(v) = old.pointer(&format!("/spec/{field}")) {
                spec.insert(field.into(), v.clone());
            }
        }
    }
    if !wants_node_ports(new) {
        return;
    }
    let old_ports: Vec<Value> = old
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let same = |a: &Value, b: &Value| {
        a.get("port") == b.get("port")
            && a.get("protocol").unwrap_or(&json!("TCP"))
                == b.get("protocol").unwrap_or(&json!("TCP"))
    };
    if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for port in ports {
            if port.get("nodePort").is_none_or(|n| n == 0)
                && let Some(old) = old_ports.iter().find(|o| same(o, port))
                && let Some(n) = old.get("nodePort")
            {
                port["nodePort"] = n.clone();
            }
        }
    }
}

/// Picks values for the Service's empty ClusterIP and NodePorts, checks the ones the user
/// chose, and returns the keys to claim and release relative to `old` (the stored Service).
/// `taken` lists values known to be in use (after random picks kept clashing), to pick
/// around them.
pub fn plan(
    ranges: &ServiceRanges,
    old: Option<&Value>,
    svc: &mut Value,
    taken: &Taken,
) -> ApiResult<Claims> {
    let name = svc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let mut claims = Claims::default();
    let mut causes = Vec::new();
    let old_ip = old.and_then(allocated_ip).map(str::to_owned);
    let old_ports = old.map(node_ports).unwrap_or_default();
    let ty = service_type(svc).to_owned();
    let spec = match svc.get_mut("spec").and_then(Value::as_object_mut) {
        Some(spec) => spec,
        None => return Ok(claims),
    };

    // --- ClusterIP ---
    let mut new_ip = None;
    if ty == "ExternalName" {
        for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            spec.remove(field);
        }
    } else {
        let requested = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let ip = if requested == "None" {
            "None".to_owned()
        } else if requested.is_empty() {
            let ip = pick_ip(&ranges.cidr, taken)?;
            claims.claim.push(Claim {
                key: ip_key(&ip),
                chosen_by_user: false,
                field: "spec.clusterIPs".into(),
                value: json!([ip]),
                what: "IP",
            });
            ip
        } else {
            match requested.parse::<IpAddr>() {
                Ok(addr) if ranges.cidr.offset_of(addr).is_some() => {
                    let canonical = addr.to_string();
                    if old_ip.as_deref() != Some(canonical.as_str()) {
                        claims.claim.push(Claim {
                            key: ip_key(&canonical),
                            chosen_by_user: true,
                            field: "spec.clusterIPs".into(),
                            value: json!([requested]),
                            what: "IP",
                        });
                    }
                    canonical
                }
                Ok(_) => {
                    causes.push(Cause::invalid(
                        "spec.clusterIPs",
                        &json!([requested]),
                        format!(
                            "failed to allocate IP {requested}: the provided IP ({requested}) is not in the valid range. The range of valid IPs is {}",
                            ranges.cidr.text
                        ),
                    ));
                    requested.clone()
                }
                Err(_) => {
                    causes.push(Cause::invalid(
                        "spec.clusterIPs[0]",
                        &json!(requested),
                        "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    ));
                    requested.clone()
                }
            }
        };
        if ip != "None" {
            new_ip = Some(ip.clone());
        }
        spec.insert("clusterIP".into(), json!(ip));
        spec.insert("clusterIPs".into(), json!([ip]));
        if spec
            .get("ipFamilies")
            .is_none_or(|f| f.as_array().is_none_or(Vec::is_empty))
        {
            spec.insert("ipFamilies".into(), json!([ranges.cidr.family()]));
        }
        if spec.get("ipFamilyPolicy").is_none_or(Value::is_null) {
            spec.insert("ipFamilyPolicy".into(), json!("SingleStack"));
        }
    }
    if let Some(old_ip) = &old_ip
        && new_ip.as_deref() != Some(old_ip.as_str())
    {
        claims.release.push(ip_key(old_ip));
    }

    // --- NodePorts ---
    let wants = matches!(ty.as_str(), "NodePort" | "LoadBalancer")
        && spec.get("allocateLoadBalancerNodePorts") != Some(&json!(false));
    let mut in_use: BTreeSet<u16> = BTreeSet::new();
    let (lo, hi) = ranges.node_ports;
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for (i, port) in ports.iter_mut().enumerate() {
            let field = format!("spec.ports[{i}].nodePort");
            let given = port.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
            if !matches!(ty.as_str(), "NodePort" | "LoadBalancer") {
                if given != 0 {
                    if old_ports.contains(&(given as u16)) {
                        // The type changed away from NodePort: the ports go with it.
                        if let Some(m) = port.as_object_mut() {
                            m.remove("nodePort");
                        }
                    } else {
                        causes.push(Cause::forbidden(
                            &field,
                            format!("may not be used when `type` is '{ty}'"),
                        ));
                    }
                }
                continue;
            }
            if given == 0 {
                if !wants {
                    continue;
                }
                let n = pick_port(ranges, taken, &in_use)?;
                in_use.insert(n);
                port["nodePort"] = json!(n);
                claims.claim.push(Claim {
                    key: port_key(n),
                    chosen_by_user: false,
                    field,
                    value: json!(n),
                    what: "port",
                });
                continue;
            }
            if !(i64::from(lo)..=i64::from(hi)).contains(&given) {
                causes.push(Cause::invalid(
                    &field,
                    &json!(given),
                    format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}"),
                ));
                continue;
            }
            let n = given as u16;
            // One number may serve several ports of the same Service (TCP and UDP 53).
            if in_use.insert(n) && !old_ports.contains(&n) {
                claims.claim.push(Claim {
                    key: port_key(n),
                    chosen_by_user: true,
                    field,
                    value: json!(n),
                    what: "port",
                });
            }
        }
    }
    for gone in old_ports.difference(&in_use) {
        claims.release.push(port_key(*gone));
    }
    if causes.is_empty() {
        Ok(claims)
    } else {
        Err(ApiError::invalid("", "Service", &name, causes))
    }
}

/// Values known to be in use, read from the store when random picks keep clashing.
#[derive(Debug, Clone, Default)]
pub struct Taken {
    ips: BTreeSet<String>,
    ports: BTreeSet<u16>,
    /// Whether the sets are complete (then picks scan for a free value).
    complete: bool,
}

impl Taken {
    /// The prefix holding every claim key.
    pub const PREFIX: &'static str = "/registry/ranges/";

    /// Builds the sets from the claim keys under [`Taken::PREFIX`].
    pub fn from_keys<'a>(keys: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut t = Taken {
            complete: true,
            ..Taken::default()
        };
        for key in keys {
            let key = String::from_utf8_lossy(key);
            if let Some(ip) = key.strip_prefix(IP_PREFIX) {
                t.ips.insert(ip.to_owned());
            } else if let Some(port) = key.strip_prefix(PORT_PREFIX)
                && let Ok(p) = port.parse()
            {
                t.ports.insert(p);
            }
        }
        t
    }
}

fn random() -> u128 {
    uuid::Uuid::new_v4().as_u128()
}

fn range_full(what: &str) -> ApiError {
    ApiError::internal(format!("failed to allocate a {what}: range is full"))
}

/// The `n % count`-th value of `candidates` that `is_free`, if any is.
fn nth_free<T: Copy>(
    candidates: impl Iterator<Item = T> + Clone,
    is_free: impl Fn(T) -> bool,
) -> Option<T> {
    let count = candidates.clone().filter(|c| is_free(*c)).count();
    if count == 0 {
        return None;
    }
    let n = (random() % count as u128) as usize;
    candidates.filter(|c| is_free(*c)).nth(n)
}

fn pick_ip(cidr: &Cidr, taken: &Taken) -> ApiResult<String> {
    let max = cidr.max_offset();
    // Upstream's static band: the low addresses are left for users' own choices.
    let band = (max / 16).clamp(16, 256).min(max / 2);
    if taken.complete {
        // A random free value, not the first: concurrent writers that all had to scan
        // would otherwise keep picking the same one.
        let free = |o: u128| !taken.ips.contains(&cidr.addr(o).to_string());
        let offset = nth_free(band + 1..=max, free).or_else(|| nth_free(1..=band, free));
        return offset
            .map(|o| cidr.addr(o).to_string())
            .ok_or_else(|| range_full("serviceIP"));
    }
    let offset = band + 1 + random() % (max - band);
    Ok(cidr.addr(offset).to_string())
}

fn pick_port(ranges: &ServiceRanges, taken: &Taken, own: &BTreeSet<u16>) -> ApiResult<u16> {
    let (lo, hi) = ranges.node_ports;
    if taken.complete {
        return nth_free(lo..=hi, |p| !taken.ports.contains(&p) && !own.contains(&p))
            .ok_or_else(|| range_full("nodePort"));
    }
    for _ in 0..64 {
        let p = lo + (random() % u128::from(hi - lo + 1)) as u16;
        if !own.contains(&p) {
            return Ok(p);
        }
    }
    Err(range_full("nodePort"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(spec: Value) -> Value {
        json!({"metadata": {"name": "s"}, "spec": spec})
    }

    #[test]
    fn cidr_offsets() {
        let c = Cidr::parse("10.43.0.0/16").unwrap();
        assert_eq!(c.max_offset(), 65534);
        assert_eq!(c.addr(1).to_string(), "10.43.0.1");
        assert_eq!(c.offset_of("10.43.255.255".parse().unwrap()), None);
        assert_eq!(c.offset_of("10.43.0.0".parse().unwrap()), None);
        assert_eq!(c.offset_of("10.44.0.1".parse().unwrap()), None);
        assert!(Cidr::parse("10.0.0.0/31").is_err());
        assert!(Cidr::parse("fd00::/64").unwrap().max_offset() > 1000);
    }

    #[test]
    fn dynamic_ip_and_ports_are_claimed() {
        let r = ServiceRanges::default();
        let mut s = svc(
            json!({"type": "NodePort", "ports": [{"port": 80}, {"port": 443, "nodePort": 30443}]}),
        );
        let c = plan(&r, None, &mut s, &Taken::default()).unwrap();
        let ip = s["spec"]["clusterIP"].as_str().unwrap().to_owned();
        let offset = r.cidr.offset_of(ip.parse().unwrap()).unwrap();
        assert!(
            offset > 256,
            "dynamic IPs come from above the static band: {ip}"
        );
        assert_eq!(s["spec"]["clusterIPs"], json!([ip]));
        assert_eq!(s["spec"]["ipFamilies"], json!(["IPv4"]));
        let auto = s["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
        assert!((30000..=32767).contains(&auto));
        assert_eq!(c.claim.len(), 3);
        assert!(!c.claim[0].chosen_by_user && c.claim[2].chosen_by_user);
        assert!(c.release.is_empty());
    }

    #[test]
    fn user_values_are_checked() {
        let r = ServiceRanges::default();
        let mut s = svc(
            json!({"clusterIP": "192.168.0.1", "type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}),
        );
        let err = plan(&r, None, &mut s, &Taken::default()).unwrap_err();
        assert_eq!(err.code, 422);
        let text = format!("{err:?}");
        assert!(text.contains("not in the valid range"), "{text}");
        let mut s = svc(json!({"ports": [{"port": 80, "nodePort": 30001}]}));
        let err = plan(&r, None, &mut s, &Taken::default()).unwrap_err();
        assert!(format!("{err:?}").contains("may not be used when `type` is 'ClusterIP'"));
    }

    #[test]
    fn updates_release_what_is_dropped() {
        let r = ServiceRanges::default();
        let mut old = svc(json!({"type": "NodePort", "ports": [{"port": 80}]}));
        plan(&r, None, &mut old, &Taken::default()).unwrap();
        // Type back to ClusterIP with the old nodePort still in the body: it is dropped.
        let mut new = old.clone();
        new["spec"]["type"] = json!("ClusterIP");
        let c = plan(&r, Some(&old), &mut new, &Taken::default()).unwrap();
        assert!(c.claim.is_empty());
        assert_eq!(c.release.len(), 1);
        assert!(new["spec"]["ports"][0].get("nodePort").is_none());
        // ExternalName gives the IP back.
        let mut ext = old.clone();
        ext["spec"] = json!({"type": "ExternalName", "externalName": "example.com"});
        let c = plan(&r, Some(&old), &mut ext, &Taken::default()).unwrap();
        assert_eq!(c.release.len(), 2);
        assert!(ext["spec"].get("clusterIP").is_none());
    }

    #[test]
    fn keep_allocated_copies_missing_values() {
        let r = ServiceRanges::default();
        let mut old = svc(json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}));
        plan(&r, None, &mut old, &Taken::default()).unwrap();
        let mut new = svc(json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}));
        keep_allocated(&old, &mut new);
        assert_eq!(new["spec"]["clusterIP"], old["spec"]["clusterIP"]);
        assert_eq!(
            new["spec"]["ports"][0]["nodePort"],
            old["spec"]["ports"][0]["nodePort"]
        );
        let c = plan(&r, Some(&old), &mut new, &Taken::default()).unwrap();
        assert!(c.is_empty());
    }

    #[test]
    fn full_scan_finds_the_last_free_value() {
        let r = ServiceRanges::parse("10.0.0.0/29", "30000-30002").unwrap();
        let keys: Vec<Vec<u8>> = (1..=5)
            .map(|o| ip_key(&format!("10.0.0.{o}")))
            .chain([port_key(30000), port_key(30002)])
            .collect();
        let taken = Taken::from_keys(keys.iter().map(Vec::as_slice));
        assert_eq!(pick_ip(&r.cidr, &taken).unwrap(), "10.0.0.6");
        assert_eq!(pick_port(&r, &taken, &BTreeSet::new()).unwrap(), 30001);
        let all: Vec<Vec<u8>> = (1..=6).map(|o| ip_key(&format!("10.0.0.{o}"))).collect();
        let full = Taken::from_keys(all.iter().map(Vec::as_slice));
        assert!(pick_ip(&r.cidr, &full).is_err());
    }
}
