//! Service accounts end to end, with kubectl 1.33: every namespace gets a `default`
//! ServiceAccount and the `kube-root-ca.crt` ConfigMap; `kubectl create token` issues JWTs
//! (TokenRequest) that authenticate as the service account (`kubectl auth whoami`), while
//! expired, tampered, foreign-audience and orphaned tokens get 401; the signing key survives
//! a restart.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use common::{KUBECTL_133, Server, eventually, json};
use serde_json::Value;

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The claims of a JWT (not verified).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Runs kubectl as the bearer of `token` only (no client certificate), trusting the
/// cluster CA.
fn as_token(server: &Server, data_dir: &Path, token: &str, args: &[&str]) -> std::process::Output {
    let empty = tempfile::NamedTempFile::new().unwrap();
    let ca = data_dir.join("tls/ca.crt");
    Command::new(KUBECTL_133)
        .arg(format!("--kubeconfig={}", empty.path().display()))
        .arg(format!("--server=https://{}", server.addr))
        .arg(format!("--certificate-authority={}", ca.display()))
        .arg(format!("--token={token}"))
        .args(args)
        .output()
        .unwrap()
}

/// The user name `kubectl auth whoami` reports for `token`, or the error it printed.
fn whoami(server: &Server, data_dir: &Path, token: &str) -> Result<Value, String> {
    let out = as_token(server, data_dir, token, &["auth", "whoami", "-o", "json"]);
    if out.status.success() {
        Ok(serde_json::from_slice::<Value>(&out.stdout).unwrap()["status"]["userInfo"].clone())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn assert_unauthorized(server: &Server, data_dir: &Path, token: &str, what: &str) {
    let err = whoami(server, data_dir, token).expect_err(what);
    assert!(err.contains("Unauthorized"), "{what}: {err}");
    let out = as_token(server, data_dir, token, &["get", "pods"]);
    assert!(!out.status.success(), "{what}: get pods should fail");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthorized"),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wait_default_sa(server: &Server, ns: &str) -> String {
    eventually(
        &format!("serviceaccount {ns}/default"),
        Duration::from_secs(30),
        || {
            let out = server.kubectl_with(
                KUBECTL_133,
                &[
                    "get",
                    "sa",
                    "default",
                    "-n",
                    ns,
                    "-o",
                    "jsonpath={.metadata.uid}",
                ],
            );
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
                .filter(|uid| !uid.is_empty())
        },
    )
}

fn root_ca(server: &Server, ns: &str) -> Option<Value> {
    let out = server.kubectl_with(
        KUBECTL_133,
        &["get", "cm", "kube-root-ca.crt", "-n", ns, "-o", "json"],
    );
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn every_namespace_gets_default_service_account_and_root_ca() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), &[]);
    let ca = std::fs::read_to_string(dir.path().join("tls/ca.crt")).unwrap();
    // The namespaces that exist at start, and one created later.
    server.kubectl(&["create", "namespace", "team-a"]);
    for ns in ["default", "kube-system", "team-a"] {
        wait_default_sa(&server, ns);
        let cm = eventually(
            &format!("{ns}/kube-root-ca.crt"),
            Duration::from_secs(30),
            || root_ca(&server, ns),
        );
        assert_eq!(cm["data"]["ca.crt"], ca.as_str(), "{ns}");
        assert!(
            cm["metadata"]["annotations"]["kubernetes.io/description"]
                .as_str()
                .unwrap()
                .contains("CA bundle"),
        );
    }
    // A deleted default service account comes back (a new object).
    let uid = wait_default_sa(&server, "team-a");
    server.kubectl(&["delete", "sa", "default", "-n", "team-a"]);
    let new_uid = eventually("default recreated", Duration::from_secs(30), || {
        Some(wait_default_sa(&server, "team-a")).filter(|u| *u != uid)
    });
    assert_ne!(uid, new_uid);
    // The ConfigMap comes back when deleted, and is put back when changed.
    server.kubectl(&["delete", "cm", "kube-root-ca.crt", "-n", "team-a"]);
    eventually(
        "kube-root-ca.crt recreated",
        Duration::from_secs(30),
        || root_ca(&server, "team-a"),
    );
    server.kubectl(&[
        "patch",
        "cm",
        "kube-root-ca.crt",
        "-n",
        "team-a",
        "--type=merge",
        "-p",
        r#"{"data":{"ca.crt":"forged"}}"#,
    ]);
    eventually("kube-root-ca.crt put back", Duration::from_secs(30), || {
        root_ca(&server, "team-a").filter(|cm| cm["data"]["ca.crt"] == ca.as_str())
    });
}

#[test]
fn token_request_issues_tokens_that_authenticate_as_the_service_account() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), &[]);
    let sa_uid = wait_default_sa(&server, "default");

    // The default token: an hour, the API audience, upstream's claims.
    let token = server
        .kubectl(&["create", "token", "default"])
        .trim()
        .to_string();
    let c = claims(&token);
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(c["sub"], "system:serviceaccount:default:default");
    assert_eq!(c["aud"], serde_json::json!([ISSUER]));
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        3600
    );
    assert_eq!(c["nbf"], c["iat"]);
    assert_eq!(c["kubernetes.io"]["namespace"], "default");
    assert_eq!(c["kubernetes.io"]["serviceaccount"]["name"], "default");
    assert_eq!(c["kubernetes.io"]["serviceaccount"]["uid"], sa_uid.as_str());

    // It authenticates as the service account, with its groups.
    let user = whoami(&server, dir.path(), &token).unwrap();
    assert_eq!(user["username"], "system:serviceaccount:default:default");
    assert_eq!(
        user["groups"],
        serde_json::json!([
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated"
        ])
    );
    let out = as_token(
        &server,
        dir.path(),
        &token,
        &["get", "sa", "default", "-o", "name"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The admin is still the admin (client certificate).
    let admin = json(&server, &["auth", "whoami"]);
    assert_eq!(admin["status"]["userInfo"]["username"], "system:admin");

    // Audience and duration as asked; another audience is not for this API server.
    let other = server
        .kubectl(&[
            "create",
            "token",
            "default",
            "--audience",
            "vault",
            "--duration",
            "10m",
        ])
        .trim()
        .to_string();
    let c = claims(&other);
    assert_eq!(c["aud"], serde_json::json!(["vault"]));
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 600);
    assert_unauthorized(&server, dir.path(), &other, "wrong audience");

    // Bad requests.
    let err = server.kubectl_err(&["create", "token", "default", "--duration", "5m"]);
    assert!(
        err.contains("may not specify a duration less than 10 minutes"),
        "{err}"
    );
    let err = server.kubectl_err(&["create", "token", "nobody"]);
    assert!(
        err.contains(r#"serviceaccounts "nobody" not found"#),
        "{err}"
    );

    // A tampered token: the payload of another service account with the old signature.
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut forged = claims(&token);
    forged["sub"] = "system:serviceaccount:kube-system:default".into();
    forged["kubernetes.io"]["namespace"] = "kube-system".into();
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&forged).unwrap());
    assert_unauthorized(&server, dir.path(), &parts.join("."), "tampered");
    // A flipped signature byte.
    let mut sig: Vec<char> = token.chars().collect();
    let last = sig.len() - 2;
    sig[last] = if sig[last] == 'A' { 'B' } else { 'A' };
    assert_unauthorized(
        &server,
        dir.path(),
        &sig.into_iter().collect::<String>(),
        "bad signature",
    );

    // An expired token signed with the server's own key.
    let keys =
        rkube_apiserver::serviceaccount_token::TokenKeys::load_or_create(&dir.path().join("tls"))
            .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expired = rkube_apiserver::serviceaccount_token::claims_for(
        "default",
        "default",
        &sa_uid,
        vec![ISSUER.into()],
        now - 7200,
        3600,
        Default::default(),
    );
    let expired = keys.sign(&expired).unwrap();
    assert_unauthorized(&server, dir.path(), &expired, "expired");
    // The same key with valid times works: the refusal above is the expiry.
    let fresh = rkube_apiserver::serviceaccount_token::claims_for(
        "default",
        "default",
        &sa_uid,
        vec![ISSUER.into()],
        now,
        3600,
        Default::default(),
    );
    assert!(whoami(&server, dir.path(), &keys.sign(&fresh).unwrap()).is_ok());

    // A token bound to a pod names it and dies with it.
    server.kubectl(&[
        "run",
        "holder",
        "--image=localhost/busybox:1",
        "--restart=Never",
    ]);
    let bound = server
        .kubectl(&[
            "create",
            "token",
            "default",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "holder",
        ])
        .trim()
        .to_string();
    let pod_uid = server.kubectl(&["get", "pod", "holder", "-o", "jsonpath={.metadata.uid}"]);
    assert_eq!(claims(&bound)["kubernetes.io"]["pod"]["name"], "holder");
    assert_eq!(
        claims(&bound)["kubernetes.io"]["pod"]["uid"],
        pod_uid.as_str()
    );
    assert!(whoami(&server, dir.path(), &bound).is_ok());
    let err = server.kubectl_err(&[
        "create",
        "token",
        "default",
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        "missing",
    ]);
    assert!(err.contains(r#"pods "missing" not found"#), "{err}");
    server.kubectl(&["delete", "pod", "holder", "--grace-period=0", "--force"]);
    eventually(
        "the pod-bound token stops working",
        Duration::from_secs(10),
        || whoami(&server, dir.path(), &bound).err(),
    );

    // Deleting the service account (the controller makes a new one, with a new UID)
    // invalidates its tokens; a new token works.
    server.kubectl(&["delete", "sa", "default"]);
    let new_uid = eventually("default recreated", Duration::from_secs(30), || {
        Some(wait_default_sa(&server, "default")).filter(|u| *u != sa_uid)
    });
    assert_ne!(new_uid, sa_uid);
    assert_unauthorized(&server, dir.path(), &token, "recreated service account");
    let token = server
        .kubectl(&["create", "token", "default"])
        .trim()
        .to_string();
    assert!(whoami(&server, dir.path(), &token).is_ok());
}

#[test]
fn the_signing_key_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), &[]);
    wait_default_sa(&server, "default");
    let token = server
        .kubectl(&["create", "token", "default"])
        .trim()
        .to_string();
    assert!(whoami(&server, dir.path(), &token).is_ok());
    let key_file = dir.path().join("tls/service-account.key");
    let key = std::fs::read(&key_file).unwrap();
    drop(server);

    let server = Server::start_in(dir.path(), &[]);
    assert_eq!(std::fs::read(&key_file).unwrap(), key, "the key is reused");
    let user = whoami(&server, dir.path(), &token).unwrap();
    assert_eq!(user["username"], "system:serviceaccount:default:default");
}
