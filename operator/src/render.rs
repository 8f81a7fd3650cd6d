//! `pingpong-operator render`: the objects the controller would apply for one stack, as
//! multi-document YAML, built by the same validate and build steps as a reconcile.
//!
//! The input is one `PingPongStack` document: a plain manifest, or the full object as
//! `kubectl get pps NAME -o yaml` prints it. The namespace is `--namespace` when given, else
//! `metadata.namespace`, else `default`. Owner references are rendered only when the input
//! carries `metadata.uid` (as objects read from a cluster do); a plain manifest has none, so its
//! rendered children have no `ownerReferences`. Credentials are freshly generated on every run,
//! exactly as the operator would for a stack whose Secrets do not exist yet (the broker's, and
//! a provisioned PostgreSQL's), and the rendered Secrets contain them (base64 in `data`). ServiceMonitors and the PrometheusRule are rendered when
//! the spec asks for them, as if the Prometheus Operator CRDs were installed.
//!
//! Secrets may follow the stack in the same stream (`---`-separated, e.g. `kubectl get secret
//! NAME -o yaml`): they count as existing, as observe would read them from the cluster. The
//! broker credentials Secret (generated or `credentialsSecret`) then gives the user the broker
//! definitions declare and the digest the pod templates carry, the Erlang-cookie and PostgreSQL
//! Secrets are not generated again, and a definitions Secret gives the former users. Existing
//! Secrets are not printed, exactly as the controller never writes them.

use crate::apis::ServedApis;
use crate::crd::PingPongStack;
use crate::credentials;
use crate::images::Images;
use crate::reconcile::builders::common::PASSWORD_KEY;
use crate::reconcile::builders::{PlanInputs, build_desired};
use crate::reconcile::desired::SerializeError;
use crate::reconcile::observe::ExistingSecrets;
use crate::reconcile::validate::{ValidationError, validate};
use k8s_openapi::api::core::v1::Secret;
use kube::Resource as _;

/// Namespace used when neither `--namespace` nor the input names one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Why a stack could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The input is not a PingPongStack document.
    #[error("the input is not a PingPongStack (pingpong.dev/v1alpha1) YAML document")]
    Parse(#[source] serde_yaml::Error),
    /// The input is YAML but not a valid PingPongStack.
    #[error("the input is not a valid PingPongStack")]
    Decode(#[source] serde_json::Error),
    /// The input is a different kind of object.
    #[error("the input is a {kind}, expected a PingPongStack (optionally followed by v1 Secrets)")]
    WrongKind {
        /// `apiVersion/kind` found.
        kind: String,
    },
    /// The stack is invalid.
    #[error("the stack is invalid")]
    Invalid(#[from] ValidationError),
    /// An object could not be serialized.
    #[error(transparent)]
    Build(#[from] SerializeError),
}

impl RenderError {
    /// Stable PascalCase category of the error.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Parse(_) => "Parse",
            Self::Decode(_) => "Decode",
            Self::WrongKind { .. } => "WrongKind",
            Self::Invalid(e) => e.kind(),
            Self::Build(_) => "Serialize",
        }
    }
}

/// Renders the objects for the stack in `input` (see the module docs), in apply order,
/// separated by `---`.
pub fn render(
    input: &str,
    namespace: Option<&str>,
    defaults: &Images,
) -> Result<String, RenderError> {
    let (stack, secrets) = parse_input(input)?;
    let mut stack = stack;
    let namespace = namespace
        .map(str::to_owned)
        .or_else(|| stack.metadata.namespace.clone())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    stack.metadata.namespace = Some(namespace);
    let validated = validate(&stack, defaults)?;
    let names = &validated.names;
    let find = |name: &str| {
        secrets
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
    };
    let credentials = find(&names.credentials_secret);
    let existing = ExistingSecrets {
        credentials: credentials.is_some(),
        erlang_cookie: find(&names.erlang_cookie_secret).is_some(),
        postgres: find(&names.postgres_credentials).is_some_and(|s| {
            s.data
                .as_ref()
                .is_some_and(|d| d.contains_key(PASSWORD_KEY))
        }),
    };
    let inputs = PlanInputs::from_observed(
        &validated,
        existing,
        ServedApis::ALL,
        credentials::generate,
        credentials::generate_password,
    )
    .with_existing(&validated, &secrets);
    let documents = build_desired(&validated, &inputs).to_yaml_documents()?;
    Ok(join_documents(&documents))
}

/// Splits the input into its PingPongStack (the first document) and the Secrets after it.
fn parse_input(input: &str) -> Result<(PingPongStack, Vec<Secret>), RenderError> {
    use serde::Deserialize as _;
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(input) {
        let value = serde_json::Value::deserialize(document).map_err(RenderError::Parse)?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    let mut documents = documents.into_iter();
    let stack = parse_stack_value(documents.next().unwrap_or_default())?;
    let mut secrets = Vec::new();
    for value in documents {
        let field = |key: &str| value.get(key).and_then(serde_json::Value::as_str);
        if (field("apiVersion"), field("kind")) != (Some("v1"), Some("Secret")) {
            return Err(RenderError::WrongKind {
                kind: format!(
                    "{}/{}",
                    field("apiVersion").unwrap_or("?"),
                    field("kind").unwrap_or("?")
                ),
            });
        }
        secrets.push(serde_json::from_value(value).map_err(RenderError::Decode)?);
    }
    Ok((stack, secrets))
}

/// Parses one PingPongStack document, checking apiVersion and kind when present.
///
/// The YAML is read into a JSON value first and decoded from that, as the API server's JSON
/// would be: serde_yaml expects YAML tags (`!provisioned`) for enums, where Kubernetes objects
/// use a one-key map (`provisioned: {}`).
pub fn parse_stack(input: &str) -> Result<PingPongStack, RenderError> {
    parse_stack_value(serde_yaml::from_str(input).map_err(RenderError::Parse)?)
}

fn parse_stack_value(value: serde_json::Value) -> Result<PingPongStack, RenderError> {
    let field = |key: &str| value.get(key).and_then(serde_json::Value::as_str);
    if let (Some(api_version), Some(kind)) = (field("apiVersion"), field("kind"))
        && (api_version != PingPongStack::api_version(&()) || kind != PingPongStack::kind(&()))
    {
        return Err(RenderError::WrongKind {
            kind: format!("{api_version}/{kind}"),
        });
    }
    serde_json::from_value(value).map_err(RenderError::Decode)
}

/// Joins YAML documents into one multi-document stream.
pub fn join_documents(documents: &[String]) -> String {
    documents
        .iter()
        .map(|doc| format!("---\n{doc}"))
        .collect::<String>()
}
