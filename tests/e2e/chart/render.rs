//! `helm template` of the chart, each document parsed into its typed k8s-openapi struct.

use std::path::Path;
use std::sync::OnceLock;

use e2e::helm::{chart_dir, Helm};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const RELEASE: &str = "demo";
pub const NAMESPACE: &str = "ipfs";
/// `<release>-<chart>`: the StatefulSet's name and the base of every other name.
pub const FULLNAME: &str = "demo-ipfs-cluster";

/// Which values the chart is rendered with.
#[derive(Clone, Copy, Debug)]
pub enum Values {
    Default,
    /// `tests/e2e/chart-values.yaml`: Parallel, 7 peers, 3 voters, other pin timeouts, an existing
    /// credentials Secret, no NetworkPolicy, a storage class, resources and scheduling.
    Other,
}

impl Values {
    pub const BOTH: [Values; 2] = [Values::Default, Values::Other];

    /// The `-f FILE` arguments of helm.
    pub fn args(self) -> Vec<String> {
        match self {
            Values::Default => Vec::new(),
            Values::Other => {
                let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/chart-values.yaml");
                vec!["-f".to_string(), file.display().to_string()]
            }
        }
    }

    /// The Secret with the REST API credentials: the chart's, or the one the values name.
    pub fn credentials_secret(self) -> String {
        match self {
            Values::Default => format!("{FULLNAME}-api-credentials"),
            Values::Other => "my-cluster-credentials".to_string(),
        }
    }
}

pub fn helm() -> &'static Helm {
    static HELM: OnceLock<Helm> = OnceLock::new();
    HELM.get_or_init(|| Helm::installed().expect("helm"))
}

/// `helm template` with the chart's CRDs, as `helm install` would create them.
pub fn template(values: Values, extra: &[&str]) -> anyhow::Result<String> {
    let chart = chart_dir().display().to_string();
    let mut args = vec!["template", RELEASE, &chart, "--namespace", NAMESPACE, "--include-crds"];
    let files = values.args();
    args.extend(files.iter().map(String::as_str));
    args.extend(extra);
    helm().run(&args)
}

/// The objects of one rendering, each already checked against its typed struct.
pub struct Rendered {
    docs: Vec<Value>,
}

impl Rendered {
    /// Renders once per process and values: the objects do not change between tests (the secrets'
    /// random values aside, which [`Rendered::fresh`] gives anew).
    pub fn of(values: Values) -> &'static Rendered {
        static DEFAULT: OnceLock<Rendered> = OnceLock::new();
        static OTHER: OnceLock<Rendered> = OnceLock::new();
        let cell = match values {
            Values::Default => &DEFAULT,
            Values::Other => &OTHER,
        };
        cell.get_or_init(|| Rendered::fresh(values))
    }

    pub fn fresh(values: Values) -> Rendered {
        let yaml = template(values, &[]).expect("helm template");
        let mut docs = Vec::new();
        for document in serde_yaml::Deserializer::from_str(&yaml) {
            let doc = Value::deserialize(document).expect("helm template prints YAML");
            if !doc.is_null() {
                assert_typed_round_trip(&doc);
                docs.push(doc);
            }
        }
        Rendered { docs }
    }

    /// `(kind, name)` of every object, in rendering order.
    pub fn objects(&self) -> Vec<(String, String)> {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        self.docs.iter().map(|d| (text(&d["kind"]), text(&d["metadata"]["name"]))).collect()
    }

    /// The namespace of every object (`None`: cluster-scoped, or missing).
    pub fn namespaces(&self) -> Vec<Option<&str>> {
        self.docs.iter().map(|d| d["metadata"]["namespace"].as_str()).collect()
    }

    /// Every object of type `K`.
    pub fn all<K: Resource + DeserializeOwned>(&self) -> Vec<K> {
        self.docs
            .iter()
            .filter(|d| d["apiVersion"] == K::API_VERSION && d["kind"] == K::KIND)
            .map(|d| serde_json::from_value(d.clone()).expect("checked when rendered"))
            .collect()
    }

    /// The object of type `K` named `name`.
    pub fn get<K: Resource + Metadata<Ty = ObjectMeta> + DeserializeOwned>(&self, name: &str) -> K {
        self.all::<K>()
            .into_iter()
            .find(|k| k.metadata().name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no {} {name} in {:?}", K::KIND, self.objects()))
    }

    pub fn peers(&self) -> StatefulSet {
        self.get(FULLNAME)
    }

    pub fn operator(&self) -> Deployment {
        self.get(&format!("{FULLNAME}-operator"))
    }
}

/// The container `name` of a pod template's spec.
pub fn container<'a>(containers: &'a [Container], name: &str) -> &'a Container {
    containers.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no container {name}"))
}

/// Parses `doc` into the k8s-openapi struct of its kind and serialises it back: a field that is
/// misspelt, misplaced or of the wrong type does not survive, so the two differ.
fn assert_typed_round_trip(doc: &Value) {
    let kind = doc["kind"].as_str().unwrap_or_else(|| panic!("a document without a kind: {doc}"));
    let again = match kind {
        "ConfigMap" => again::<ConfigMap>(doc),
        "CustomResourceDefinition" => again::<CustomResourceDefinition>(doc),
        "Deployment" => again::<Deployment>(doc),
        "Lease" => again::<Lease>(doc),
        "NetworkPolicy" => again::<NetworkPolicy>(doc),
        "PodDisruptionBudget" => again::<PodDisruptionBudget>(doc),
        "Role" => again::<Role>(doc),
        "RoleBinding" => again::<RoleBinding>(doc),
        "Secret" => again::<Secret>(doc),
        "Service" => again::<Service>(doc),
        "ServiceAccount" => again::<ServiceAccount>(doc),
        "StatefulSet" => again::<StatefulSet>(doc),
        other => panic!("the chart renders a {other}, which this test does not know: add it above"),
    };
    let name = &doc["metadata"]["name"];
    match again {
        Ok(again) => {
            if let Some(difference) = first_difference(doc, &again, String::new()) {
                panic!("{kind} {name}: {difference}");
            }
        }
        Err(e) => panic!("{kind} {name} is not a valid {kind}: {e}"),
    }
}

fn again<K: Serialize + DeserializeOwned>(doc: &Value) -> serde_json::Result<Value> {
    serde_json::to_value(serde_json::from_value::<K>(doc.clone())?)
}

/// Where `rendered` and `typed` first differ, as a JSON path.
fn first_difference(rendered: &Value, typed: &Value, path: String) -> Option<String> {
    match (rendered, typed) {
        (Value::Object(a), Value::Object(b)) => {
            let keys = a.keys().chain(b.keys().filter(|k| !a.contains_key(*k)));
            keys.map(|k| (k, a.get(k).unwrap_or(&Value::Null), b.get(k).unwrap_or(&Value::Null)))
                .find_map(|(k, x, y)| first_difference(x, y, format!("{path}.{k}")))
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            a.iter().zip(b).enumerate().find_map(|(i, (x, y))| first_difference(x, y, format!("{path}[{i}]")))
        }
        _ if rendered == typed => None,
        _ => Some(format!("{path}: rendered {rendered}, typed {typed} (misspelt, misplaced or mistyped)")),
    }
}
