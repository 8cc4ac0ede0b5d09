//! The Helm chart (`charts/ipfs-cluster`), checked with real helm and without a cluster: `helm lint`,
//! and `helm template` with the default and other values, every object parsed into its typed
//! k8s-openapi struct (see `render`), then what the operator and the sidecar rely on.

mod operator;
mod peers;
mod render;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use e2e::helm::chart_dir;
use k8s_openapi::api::core::v1::{PodSpec, Secret};
use render::{helm, template, Rendered, Values, FULLNAME, NAMESPACE};
use serde_json::Value;

#[test]
fn helm_lint_passes_strict_with_default_and_other_values() {
    let chart = chart_dir().display().to_string();
    for values in Values::BOTH {
        for strict in [&[][..], &["--strict"]] {
            let files = values.args();
            let mut args = vec!["lint", &chart];
            args.extend(strict);
            args.extend(files.iter().map(String::as_str));
            let out = helm().run(&args).unwrap_or_else(|e| panic!("{values:?}: {e}"));
            assert!(out.contains("1 chart(s) linted, 0 chart(s) failed"), "{values:?}: {out}");
            assert!(!out.contains("[WARNING]") && !out.contains("[ERROR]"), "{values:?}: {out}");
        }
    }
}

#[test]
fn the_chart_renders_these_objects_in_its_namespace() {
    let common = [
        ("ConfigMap", "demo-ipfs-cluster-ipfs-init"),
        ("CustomResourceDefinition", "clusterpeers.ipfscluster.io"),
        ("CustomResourceDefinition", "pins.ipfscluster.io"),
        ("Deployment", "demo-ipfs-cluster-operator"),
        ("Lease", "demo-ipfs-cluster-operator"),
        ("PodDisruptionBudget", "demo-ipfs-cluster"),
        ("Role", "demo-ipfs-cluster-operator"),
        ("RoleBinding", "demo-ipfs-cluster-operator"),
        ("Secret", "demo-ipfs-cluster-secret"),
        ("Service", "demo-ipfs-cluster"),
        ("Service", "demo-ipfs-cluster-peers"),
        ("ServiceAccount", "demo-ipfs-cluster-operator"),
        ("StatefulSet", "demo-ipfs-cluster"),
    ];
    // The other values bring their own credentials Secret and turn the NetworkPolicy off.
    let default_only = [("NetworkPolicy", "demo-ipfs-cluster"), ("Secret", "demo-ipfs-cluster-api-credentials")];
    for (values, expected) in [
        (Values::Default, common.iter().chain(&default_only).collect::<Vec<_>>()),
        (Values::Other, common.iter().collect()),
    ] {
        let rendered = Rendered::of(values);
        let objects: BTreeSet<(String, String)> = rendered.objects().into_iter().collect();
        let expected: BTreeSet<(String, String)> =
            expected.iter().map(|(kind, name)| (kind.to_string(), name.to_string())).collect();
        assert_eq!(objects, expected, "{values:?}");
        for ((kind, name), namespace) in rendered.objects().into_iter().zip(rendered.namespaces()) {
            let expected = (kind != "CustomResourceDefinition").then_some(NAMESPACE);
            assert_eq!(namespace, expected, "{values:?}: {kind} {name}");
        }
    }
}

/// The chart ships the CRDs `crdgen` writes to `crds/`, byte for byte.
#[test]
fn the_charts_crds_are_the_generated_files() {
    let generated = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let shipped = chart_dir().join("crds");
    let yaml_files = |dir: &Path| -> BTreeSet<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| PathBuf::from(entry.unwrap().file_name()))
            .filter(|name| name.extension().is_some_and(|ext| ext == "yaml"))
            .collect()
    };
    let files = yaml_files(&generated);
    assert!(!files.is_empty(), "no CRDs in {}", generated.display());
    assert_eq!(yaml_files(&shipped), files);
    for file in files {
        let read = |dir: &Path| std::fs::read(dir.join(&file)).unwrap();
        assert!(read(&shipped) == read(&generated), "{} differs from crds/: run crdgen", file.display());
    }
}

/// values.schema.json refuses what would render a broken cluster.
#[test]
fn the_values_schema_refuses_bad_values() {
    for (set, complaint) in [
        ("peers.maxVoters=4", "/peers/maxVoters"),
        ("peers.podManagementPolicy=Random", "/peers/podManagementPolicy"),
        ("peers.terminationGracePeriodSeconds=15", "/peers/terminationGracePeriodSeconds"),
        ("peers.sidecar.pinTimeout=tomorrow", "/peers/sidecar/pinTimeout"),
        ("peers.sidecar.pinDeadline=0s", "/peers/sidecar/pinDeadline"),
        ("peers.replcas=3", "replcas"),
        ("api.credentials.user=a:b", "/api/credentials/user"),
    ] {
        let error = template(Values::Default, &["--set", set]).expect_err(set).to_string();
        assert!(error.contains(complaint), "--set {set}: {error}");
    }
}

/// No secret in the default values; each install generates its own (and `lookup` keeps them across
/// upgrades, which needs a cluster: the end-to-end tests check that).
#[test]
fn secrets_are_generated_per_install_and_absent_from_the_values() {
    let values: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap()).unwrap();
    let mut secretive = Vec::new();
    collect_secretive_values(&values, "", &mut secretive);
    assert!(!secretive.is_empty(), "the walk finds api.credentials.password");
    for (path, value) in secretive {
        assert_eq!(value, "", "values.yaml carries a secret at {path}");
    }

    let generated = || {
        let rendered = Rendered::fresh(Values::Default);
        let data = |name: &str, key: &str| {
            let secret: Secret = rendered.get(name);
            let bytes = secret.data.unwrap_or_default().remove(key).unwrap_or_else(|| panic!("{name} has no {key}"));
            String::from_utf8(bytes.0).unwrap()
        };
        (data(&format!("{FULLNAME}-secret"), "secret"), data(&format!("{FULLNAME}-api-credentials"), "credentials"))
    };
    let (secret, credentials) = generated();
    assert!(secret.len() == 64 && secret.chars().all(|c| c.is_ascii_hexdigit()), "32 bytes in hex: {secret}");
    let password = credentials.strip_prefix("admin:").unwrap_or_else(|| panic!("admin:<password>: {credentials}"));
    assert!(password.len() == 24 && password.chars().all(|c| c.is_ascii_alphanumeric()), "{password}");
    let (other_secret, other_credentials) = generated();
    assert_ne!(secret, other_secret, "a fixed cluster secret");
    assert_ne!(credentials, other_credentials, "fixed credentials");
}

/// `(path, value)` of every value whose key names a secret or password.
fn collect_secretive_values(value: &Value, path: &str, found: &mut Vec<(String, String)>) {
    if let Value::Object(map) = value {
        for (key, inner) in map {
            let path = format!("{path}.{key}");
            let lower = key.to_lowercase();
            match inner {
                Value::Object(_) => collect_secretive_values(inner, &path, found),
                _ if lower.contains("secret") || lower.contains("password") || lower.contains("token") => {
                    found.push((path, inner.as_str().map_or_else(|| inner.to_string(), str::to_string)))
                }
                _ => {}
            }
        }
    }
}

/// The chart's appVersion is the workspace's version, and the default tag of our images.
#[test]
fn the_app_version_is_the_workspace_version() {
    let chart: Value = serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap()).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(chart["appVersion"], version);
    let rendered = Rendered::of(Values::Default);
    let peers = rendered.peers().spec.unwrap().template.spec.unwrap();
    let operator = rendered.operator().spec.unwrap().template.spec.unwrap();
    let image = |containers: &[_], name| render::container(containers, name).image.clone().unwrap();
    assert_eq!(image(&peers.containers, "cluster"), format!("ipfs-cluster-sidecar:{version}"));
    assert_eq!(image(&operator.containers, "operator"), format!("ipfs-cluster-operator:{version}"));
}

/// `tests/e2e/chart-values.yaml`, as JSON.
fn other_values() -> Value {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/chart-values.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
}

/// No way to gain privileges: the pod is non-root under the runtime's seccomp profile; its container
/// `name` runs as `uid`, without escalation or any capability; `read_only_root` as expected.
fn assert_unprivileged(pod: &PodSpec, name: &str, uid: i64, read_only_root: Option<bool>) {
    let pod_security = pod.security_context.clone().expect("a pod securityContext");
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(pod_security.seccomp_profile.expect("a seccomp profile").type_, "RuntimeDefault");
    let security = render::container(&pod.containers, name).security_context.clone().expect("a securityContext");
    assert_eq!(security.run_as_user, Some(uid), "{name}");
    assert_eq!(security.allow_privilege_escalation, Some(false), "{name}");
    let dropped = security.capabilities.and_then(|c| c.drop);
    assert_eq!(dropped, Some(vec!["ALL".to_string()]), "{name}");
    assert_eq!(security.read_only_root_filesystem, read_only_root, "{name}");
}
