//! Service account tokens: the TokenRequest API (`POST
//! /api/v1/namespaces/NS/serviceaccounts/NAME/token`), the bearer-token authenticator that
//! accepts the tokens it issues, and `SelfSubjectReview` (`kubectl auth whoami`).
//!
//! Tokens are JWTs signed with ES256 by a P-256 key kept in `<data-dir>/tls/`
//! ([`KEY_FILE`]), created on first start and reused afterwards, so tokens survive a server
//! restart. The claims are upstream's: `iss` ([`ISSUER`], upstream's
//! `--service-account-issuer` for a cluster domain of `cluster.local`), `sub`
//! (`system:serviceaccount:NS:NAME`), `aud`, `exp`, `iat`, `nbf`, `jti` and the private
//! `kubernetes.io` claim naming the namespace, the service account and, for bound tokens, the
//! pod (with its node), secret or node with their UIDs.
//!
//! A token authenticates as `system:serviceaccount:NS:NAME` in the groups
//! `system:serviceaccounts`, `system:serviceaccounts:NS` and `system:authenticated` while:
//! its signature, issuer and expiry (60 s leeway, as go-jose) check out; one of its audiences
//! is an API audience (upstream's `--api-audiences`, which defaults to the issuer); the
//! service account (and the bound object) still exists with the UID in the token and was not
//! deleted more than 60 s ago. Anything else is 401, like any unknown token.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::rest::Rest;
use crate::status::{ApiError, ApiResult, Cause};
use crate::tls::{AUTHENTICATED_GROUP, UserInfo};

/// File name of the service account signing key inside the TLS directory (PKCS#8 PEM,
/// ECDSA P-256).
pub const KEY_FILE: &str = "service-account.key";
/// The issuer of every token (`iss`), upstream's for `--cluster-domain cluster.local`.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Lifetime of a token when the request names none (`expirationSeconds`).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// Shortest lifetime a request may ask for (10 minutes, as upstream).
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// Longest lifetime a request may ask for (2^32 s, as upstream's validation).
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;
/// Clock skew allowed on `exp`/`nbf`, and how long a deleted service account's tokens still
/// work (go-jose's default leeway, which upstream uses).
pub const LEEWAY_SECONDS: i64 = 60;
/// Group of every service account.
pub const SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";
/// Mode of the key file.
const KEY_MODE: u32 = 0o600;

/// What went wrong with the signing key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file cannot be read or written.
    #[error("cannot {action} service account key {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold a P-256 key.
    #[error("{path} is not a PKCS#8 PEM ECDSA P-256 private key ({reason}); it was left untouched")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Generating a key failed.
    #[error("cannot generate a service account key: {0}")]
    Generate(String),
}

/// The `kubernetes.io` claim: who the token is for and what it is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    /// The service account's namespace.
    pub namespace: String,
    /// The service account.
    pub serviceaccount: ObjectClaim,
    /// The pod the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectClaim>,
    /// The secret the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectClaim>,
    /// The node the token is bound to, or the node of the bound pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectClaim>,
}

/// An object in the claims: name and UID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectClaim {
    /// The object's name.
    pub name: String,
    /// The object's UID.
    pub uid: String,
}

/// The claims of a service account token, as upstream writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer ([`ISSUER`]).
    pub iss: String,
    /// `system:serviceaccount:NS:NAME`.
    pub sub: String,
    /// Audiences.
    pub aud: Vec<String>,
    /// Expiry (Unix seconds).
    pub exp: i64,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Not before (Unix seconds).
    pub nbf: i64,
    /// Token ID.
    #[serde(default)]
    pub jti: String,
    /// Who and what the token is for.
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
}

/// What a token is bound to (`spec.boundObjectRef`), resolved to existing objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binding {
    /// A pod.
    pub pod: Option<ObjectClaim>,
    /// A secret.
    pub secret: Option<ObjectClaim>,
    /// A node (given, or the bound pod's node).
    pub node: Option<ObjectClaim>,
}

/// The user name of a service account: `system:serviceaccount:NS:NAME`.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The claims of a token for `namespace/name` (UID `uid`) issued at `now` for `seconds`.
pub fn claims_for(
    namespace: &str,
    name: &str,
    uid: &str,
    audiences: Vec<String>,
    now: i64,
    seconds: i64,
    binding: Binding,
) -> Claims {
    Claims {
        iss: ISSUER.to_string(),
        sub: service_account_user(namespace, name),
        aud: audiences,
        exp: now + seconds,
        iat: now,
        nbf: now,
        jti: uuid::Uuid::new_v4().to_string(),
        kubernetes: KubernetesClaims {
            namespace: namespace.to_string(),
            serviceaccount: ObjectClaim {
                name: name.to_string(),
                uid: uid.to_string(),
            },
            pod: binding.pod,
            secret: binding.secret,
            node: binding.node,
        },
    }
}

/// Why a token's claims are not accepted (before looking at the objects it names).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    /// `exp` is in the past (beyond the leeway).
    #[error("service account token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("service account token is not valid yet")]
    NotYetValid,
    /// No audience of the token is an API audience.
    #[error("token audiences {0:?} are not the API audiences")]
    Audience(Vec<String>),
    /// The subject does not match the `kubernetes.io` claim.
    #[error("token subject {0:?} does not name its service account")]
    Subject(String),
}

/// Checks the time and audience claims at `now` against the API audiences.
pub fn check_claims(
    claims: &Claims,
    now: i64,
    api_audiences: &[String],
) -> Result<(), ClaimsError> {
    if now > claims.exp + LEEWAY_SECONDS {
        return Err(ClaimsError::Expired);
    }
    if now + LEEWAY_SECONDS < claims.nbf {
        return Err(ClaimsError::NotYetValid);
    }
    if !claims.aud.iter().any(|a| api_audiences.contains(a)) {
        return Err(ClaimsError::Audience(claims.aud.clone()));
    }
    let k = &claims.kubernetes;
    if claims.sub != service_account_user(&k.namespace, &k.serviceaccount.name) {
        return Err(ClaimsError::Subject(claims.sub.clone()));
    }
    Ok(())
}

/// The signing key and the audiences tokens must carry to reach this API server.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// Audiences the API server accepts (upstream `--api-audiences`; default: the issuer).
    pub api_audiences: Vec<String>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("api_audiences", &self.api_audiences)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Loads `<tls_dir>/service-account.key`, creating it first if it does not exist. A file
    /// that is not a P-256 key is an error and is left as it is.
    pub fn load_or_create(tls_dir: &Path) -> Result<Self, KeyError> {
        let path = tls_dir.join(KEY_FILE);
        let io = |action, source| KeyError::Io {
            action,
            path: path.clone(),
            source,
        };
        let pair = match fs::read_to_string(&path) {
            Ok(text) => {
                let pair = KeyPair::from_pem(&text).map_err(|e| KeyError::Invalid {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                if pair.algorithm() != &PKCS_ECDSA_P256_SHA256 {
                    return Err(KeyError::Invalid {
                        path: path.clone(),
                        reason: "not an ECDSA P-256 key".into(),
                    });
                }
                pair
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
                    .map_err(|e| KeyError::Generate(e.to_string()))?;
                fs::create_dir_all(tls_dir).map_err(|e| io("create the directory of", e))?;
                let tmp = tls_dir.join(format!("{KEY_FILE}.tmp"));
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(KEY_MODE)
                    .open(&tmp)
                    .map_err(|e| io("write", e))?;
                file.write_all(pair.serialize_pem().as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| io("write", e))?;
                fs::rename(&tmp, &path).map_err(|e| io("write", e))?;
                tracing::info!(path = %path.display(), "created the service account signing key");
                pair
            }
            Err(e) => return Err(io("read", e)),
        };
        Ok(Self::from_key_pair(&pair))
    }

    /// Keys from a P-256 key pair.
    pub fn from_key_pair(pair: &KeyPair) -> Self {
        Self {
            encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
            decoding: DecodingKey::from_ec_der(pair.public_key_raw()),
            api_audiences: vec![ISSUER.to_string()],
        }
    }

    /// Signs `claims` (ES256).
    pub fn sign(&self, claims: &Claims) -> Result<String, ApiError> {
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &self.encoding)
            .map_err(|e| ApiError::internal(format!("cannot sign the token: {e}")))
    }

    /// The claims of `token` if its signature and issuer are ours and its time and audience
    /// claims hold at `now`; `None` for anything that is not such a token.
    pub fn verify(&self, token: &str, now: i64) -> Option<Claims> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.set_issuer(&[ISSUER]);
        let data = match jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation) {
            Ok(data) => data,
            Err(err) => {
                tracing::debug!(%err, "bearer token is not a valid service account token");
                return None;
            }
        };
        match check_claims(&data.claims, now, &self.api_audiences) {
            Ok(()) => Some(data.claims),
            Err(err) => {
                tracing::debug!(%err, sub = %data.claims.sub, "service account token refused");
                None
            }
        }
    }
}

/// The user of a service account token: `None` when it is not one, has expired, has a
/// foreign audience, or names a service account (or bound object) that is gone or was
/// recreated.
pub async fn authenticate(keys: &TokenKeys, rest: &Rest, headers: &HeaderMap) -> Option<UserInfo> {
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = auth.strip_prefix("Bearer ")?.trim();
    let now = chrono::Utc::now().timestamp();
    let claims = keys.verify(token, now)?;
    let k = &claims.kubernetes;
    let alive = |what: &str, obj: &Value, uid: &str| {
        let ok = obj.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid)
            && !deleted_long_ago(obj, now);
        if !ok {
            tracing::debug!(sub = %claims.sub, what, "service account token refused: object gone or recreated");
        }
        ok
    };
    let sa = get(
        rest,
        "",
        "serviceaccounts",
        Some(&k.namespace),
        &k.serviceaccount.name,
    )
    .await?;
    if !alive("serviceaccount", &sa, &k.serviceaccount.uid) {
        return None;
    }
    if let Some(pod) = &k.pod {
        let obj = get(rest, "", "pods", Some(&k.namespace), &pod.name).await?;
        if !alive("pod", &obj, &pod.uid) {
            return None;
        }
    }
    if let Some(secret) = &k.secret {
        let obj = get(rest, "", "secrets", Some(&k.namespace), &secret.name).await?;
        if !alive("secret", &obj, &secret.uid) {
            return None;
        }
    }
    // A node named for a pod-bound token is informational; a node-bound token needs it.
    if let (None, Some(node)) = (&k.pod, &k.node) {
        let obj = get(rest, "", "nodes", None, &node.name).await?;
        if !alive("node", &obj, &node.uid) {
            return None;
        }
    }
    Some(UserInfo {
        name: claims.sub.clone(),
        groups: vec![
            SERVICE_ACCOUNTS_GROUP.to_string(),
            format!("{SERVICE_ACCOUNTS_GROUP}:{}", k.namespace),
            AUTHENTICATED_GROUP.to_string(),
        ],
    })
}

/// Whether `obj` was marked for deletion more than the leeway before `now`.
fn deleted_long_ago(obj: &Value, now: i64) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| t.timestamp() + LEEWAY_SECONDS < now)
}

async fn get(
    rest: &Rest,
    group: &str,
    plural: &str,
    namespace: Option<&str>,
    name: &str,
) -> Option<Value> {
    let info = rest.registry.get(group, "v1", plural)?;
    rest.get(info, namespace, name).await.ok().map(|c| c.object)
}

/// The validated parts of a TokenRequest's spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    /// Audiences (the API audiences when the request names none).
    pub audiences: Vec<String>,
    /// Lifetime in seconds.
    pub expiration_seconds: i64,
    /// `boundObjectRef`: kind, apiVersion, name, uid.
    pub bound: Option<BoundRef>,
}

/// A `spec.boundObjectRef`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundRef {
    /// `Pod`, `Secret` or `Node`.
    pub kind: String,
    /// `v1`.
    pub api_version: String,
    /// The object's name.
    pub name: String,
    /// The UID it must have (empty: any).
    pub uid: String,
}

fn token_invalid(name: &str, causes: Vec<Cause>) -> ApiError {
    ApiError::invalid("authentication.k8s.io", "TokenRequest", name, causes)
}

/// Reads and validates a TokenRequest body's spec as upstream's `ValidateTokenRequest`.
pub fn parse_spec(body: &Value, name: &str, api_audiences: &[String]) -> ApiResult<TokenSpec> {
    let spec = body.get("spec").cloned().unwrap_or(json!({}));
    let audiences: Vec<String> = match spec.get("audiences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::bad_request("error decoding TokenRequest: audiences must be strings")
                })
            })
            .collect::<ApiResult<_>>()?,
        Some(_) => {
            return Err(ApiError::bad_request(
                "error decoding TokenRequest: audiences must be a list",
            ));
        }
    };
    let audiences = if audiences.is_empty() {
        api_audiences.to_vec()
    } else {
        audiences
    };
    let expiration_seconds = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
        Some(v) => v.as_i64().ok_or_else(|| {
            ApiError::bad_request(
                "error decoding TokenRequest: expirationSeconds must be an integer",
            )
        })?,
    };
    let field = "spec.expirationSeconds";
    if expiration_seconds < MIN_EXPIRATION_SECONDS {
        return Err(token_invalid(
            name,
            vec![Cause::invalid(
                field,
                &json!(expiration_seconds),
                "may not specify a duration less than 10 minutes",
            )],
        ));
    }
    if expiration_seconds > MAX_EXPIRATION_SECONDS {
        return Err(token_invalid(
            name,
            vec![Cause::invalid(
                field,
                &json!(expiration_seconds),
                "may not specify a duration larger than 2^32 seconds",
            )],
        ));
    }
    let bound = match spec.get("boundObjectRef") {
        None | Some(Value::Null) => None,
        Some(r) => {
            let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            Some(BoundRef {
                kind: s("kind"),
                api_version: s("apiVersion"),
                name: s("name"),
                uid: s("uid"),
            })
        }
    };
    Ok(TokenSpec {
        audiences,
        expiration_seconds,
        bound,
    })
}

/// `POST .../serviceaccounts/NAME/token`: issues a token for the service account, bound to
/// the object the request names, and answers with the TokenRequest and its `status`.
pub async fn create_token(
    keys: &TokenKeys,
    rest: &Rest,
    namespace: &str,
    name: &str,
    request: Value,
) -> ApiResult<Response<Body>> {
    let spec = parse_spec(&request, name, &keys.api_audiences)?;
    let sa_info = rest
        .registry
        .get("", "v1", "serviceaccounts")
        .ok_or_else(|| ApiError::internal("serviceaccounts are not registered"))?;
    let sa = rest.get(sa_info, Some(namespace), name).await?.object;
    let sa_uid = sa
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let binding = resolve_binding(rest, namespace, name, spec.bound.as_ref()).await?;
    let now = chrono::Utc::now();
    let claims = claims_for(
        namespace,
        name,
        &sa_uid,
        spec.audiences.clone(),
        now.timestamp(),
        spec.expiration_seconds,
        binding,
    );
    let token = keys.sign(&claims)?;
    let expires = chrono::DateTime::from_timestamp(claims.exp, 0)
        .unwrap_or(now)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut out = request;
    out["apiVersion"] = json!("authentication.k8s.io/v1");
    out["kind"] = json!("TokenRequest");
    if !out.get("metadata").is_some_and(Value::is_object) {
        out["metadata"] = json!({});
    }
    out["metadata"]["name"] = json!(name);
    out["metadata"]["namespace"] = json!(namespace);
    out["metadata"]["creationTimestamp"] = Value::Null;
    if !out.get("spec").is_some_and(Value::is_object) {
        out["spec"] = json!({});
    }
    out["spec"]["audiences"] = json!(spec.audiences);
    out["spec"]["expirationSeconds"] = json!(spec.expiration_seconds);
    out["status"] = json!({"token": token, "expirationTimestamp": expires});
    let mut resp = Response::new(Body::from(out.to_string()));
    *resp.status_mut() = StatusCode::CREATED;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// Looks up the object a token is to be bound to, as upstream: a Pod (which must run as this
/// service account; its node goes into the claims too), a Secret or a Node, with the UID the
/// reference names (409 when it differs).
async fn resolve_binding(
    rest: &Rest,
    namespace: &str,
    sa_name: &str,
    bound: Option<&BoundRef>,
) -> ApiResult<Binding> {
    let Some(r) = bound else {
        return Ok(Binding::default());
    };
    let (plural, ns) = match (r.api_version.as_str(), r.kind.as_str()) {
        ("v1", "Pod") => ("pods", Some(namespace)),
        ("v1", "Secret") => ("secrets", Some(namespace)),
        ("v1", "Node") => ("nodes", None),
        _ => {
            return Err(ApiError::bad_request(format!(
                "cannot bind token for serviceaccount {sa_name:?} to object of kind {:?}",
                format!("{}, Kind={}", r.api_version, r.kind)
            )));
        }
    };
    let info = rest
        .registry
        .get("", "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not registered")))?;
    let obj = rest.get(info, ns, &r.name).await?.object;
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !r.uid.is_empty() && r.uid != uid {
        return Err(ApiError::conflict(
            crate::status::Target {
                group: "",
                resource: r.kind.as_str(),
                name: &r.name,
            },
            format!(
                "the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated",
                r.uid
            ),
        ));
    }
    let claim = ObjectClaim {
        name: r.name.clone(),
        uid,
    };
    let mut binding = Binding::default();
    match plural {
        "pods" => {
            let pod_sa = obj
                .pointer("/spec/serviceAccountName")
                .and_then(Value::as_str)
                .unwrap_or("default");
            if pod_sa != sa_name {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount {sa_name:?} to pod running with different serviceaccount name."
                )));
            }
            if let Some(node) = obj
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                let node_uid = match rest.registry.get("", "v1", "nodes") {
                    Some(info) => rest
                        .get(info, None, node)
                        .await
                        .ok()
                        .and_then(|c| {
                            c.object
                                .pointer("/metadata/uid")
                                .and_then(Value::as_str)
                                .map(str::to_string)
                        })
                        .unwrap_or_default(),
                    None => String::new(),
                };
                binding.node = Some(ObjectClaim {
                    name: node.to_string(),
                    uid: node_uid,
                });
            }
            binding.pod = Some(claim);
        }
        "secrets" => binding.secret = Some(claim),
        _ => binding.node = Some(claim),
    }
    Ok(binding)
}

/// `POST /apis/authentication.k8s.io/v1/selfsubjectreviews`: who the caller is.
pub fn self_subject_review(user: &UserInfo) -> Response<Body> {
    let out = json!({
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "status": {"userInfo": {"username": user.name, "groups": user.groups}},
    });
    let mut resp = Response::new(Body::from(out.to_string()));
    *resp.status_mut() = StatusCode::CREATED;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Shared handle to the keys, as the authenticator keeps it.
pub type SharedKeys = Arc<TokenKeys>;

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::from_key_pair(&KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap())
    }

    fn claims(now: i64, aud: &str) -> Claims {
        claims_for(
            "ns1",
            "builder",
            "uid-1",
            vec![aud.to_string()],
            now,
            600,
            Binding {
                pod: Some(ObjectClaim {
                    name: "p".into(),
                    uid: "pod-uid".into(),
                }),
                secret: None,
                node: Some(ObjectClaim {
                    name: "n1".into(),
                    uid: "node-uid".into(),
                }),
            },
        )
    }

    #[test]
    fn claims_are_upstream_shaped() {
        let c = claims(1_000, ISSUER);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["iss"], ISSUER);
        assert_eq!(v["sub"], "system:serviceaccount:ns1:builder");
        assert_eq!(v["aud"], json!([ISSUER]));
        assert_eq!(
            (v["iat"].as_i64(), v["nbf"].as_i64()),
            (Some(1_000), Some(1_000))
        );
        assert_eq!(v["exp"], 1_600);
        assert_eq!(
            v["kubernetes.io"],
            json!({
                "namespace": "ns1",
                "serviceaccount": {"name": "builder", "uid": "uid-1"},
                "pod": {"name": "p", "uid": "pod-uid"},
                "node": {"name": "n1", "uid": "node-uid"},
            })
        );
        assert!(!c.jti.is_empty());
    }

    #[test]
    fn signed_tokens_verify_and_round_trip() {
        let k = keys();
        let now = chrono::Utc::now().timestamp();
        let c = claims(now, ISSUER);
        let token = k.sign(&c).unwrap();
        assert_eq!(token.split('.').count(), 3);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(k.verify(&token, now), Some(c));
    }

    #[test]
    fn tampered_foreign_expired_and_wrong_audience_tokens_are_refused() {
        let k = keys();
        let now = chrono::Utc::now().timestamp();
        let token = k.sign(&claims(now, ISSUER)).unwrap();
        // A changed payload no longer matches the signature.
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let mut other = claims(now, ISSUER);
        other.kubernetes.serviceaccount.name = "admin".into();
        other.sub = service_account_user("ns1", "admin");
        let forged = k.sign(&other).unwrap();
        parts[1] = forged.split('.').nth(1).unwrap().to_string();
        assert_eq!(k.verify(&parts.join("."), now), None);
        // Another key's signature.
        assert_eq!(keys().verify(&token, now), None);
        // Expired (beyond the leeway), and not yet valid.
        assert_eq!(k.verify(&token, now + 600 + LEEWAY_SECONDS + 1), None);
        assert!(k.verify(&token, now + 600 + LEEWAY_SECONDS - 1).is_some());
        assert_eq!(k.verify(&token, now - LEEWAY_SECONDS - 1), None);
        // An audience that is not the API's.
        let foreign = k.sign(&claims(now, "vault")).unwrap();
        assert_eq!(k.verify(&foreign, now), None);
        assert_eq!(k.verify("not-a-jwt", now), None);
    }

    #[test]
    fn check_claims_reports_why() {
        let aud = vec![ISSUER.to_string()];
        let c = claims(1_000, ISSUER);
        assert_eq!(check_claims(&c, 1_000, &aud), Ok(()));
        assert_eq!(check_claims(&c, 1_661, &aud), Err(ClaimsError::Expired));
        assert_eq!(check_claims(&c, 939, &aud), Err(ClaimsError::NotYetValid));
        let other = claims(1_000, "x");
        assert!(matches!(
            check_claims(&other, 1_000, &aud),
            Err(ClaimsError::Audience(_))
        ));
        let mut bad_sub = c.clone();
        bad_sub.sub = "system:serviceaccount:ns1:other".into();
        assert!(matches!(
            check_claims(&bad_sub, 1_000, &aud),
            Err(ClaimsError::Subject(_))
        ));
    }

    #[test]
    fn spec_defaults_and_validation_as_upstream() {
        let aud = vec![ISSUER.to_string()];
        let s = parse_spec(&json!({}), "sa", &aud).unwrap();
        assert_eq!(s.audiences, aud);
        assert_eq!(s.expiration_seconds, 3600);
        assert_eq!(s.bound, None);
        let s = parse_spec(
            &json!({"spec": {"audiences": ["a", "b"], "expirationSeconds": 600,
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": "u"}}}),
            "sa",
            &aud,
        )
        .unwrap();
        assert_eq!(s.audiences, vec!["a", "b"]);
        assert_eq!(s.expiration_seconds, 600);
        assert_eq!(s.bound.unwrap().kind, "Pod");
        let err = parse_spec(&json!({"spec": {"expirationSeconds": 599}}), "sa", &aud).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(
            err.message
                .contains("may not specify a duration less than 10 minutes"),
            "{}",
            err.message
        );
        let err = parse_spec(
            &json!({"spec": {"expirationSeconds": (1i64 << 32) + 1}}),
            "sa",
            &aud,
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
        assert_eq!(
            parse_spec(&json!({"spec": {"audiences": "x"}}), "sa", &aud)
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn the_key_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = TokenKeys::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            KEY_MODE
        );
        let now = chrono::Utc::now().timestamp();
        let token = k1.sign(&claims(now, ISSUER)).unwrap();
        let k2 = TokenKeys::load_or_create(dir.path()).unwrap();
        assert!(
            k2.verify(&token, now).is_some(),
            "the reloaded key verifies old tokens"
        );
        // A file that is not a key is refused and left alone.
        fs::write(&path, "garbage").unwrap();
        assert!(matches!(
            TokenKeys::load_or_create(dir.path()),
            Err(KeyError::Invalid { .. })
        ));
        assert_eq!(fs::read_to_string(&path).unwrap(), "garbage");
    }
}
