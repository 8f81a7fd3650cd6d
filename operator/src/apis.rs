//! The optional APIs a cluster may serve (Gateway API HTTPRoute, Prometheus Operator
//! ServiceMonitor and PrometheusRule, KEDA ScaledObject and TriggerAuthentication): their
//! resources, and which of them the cluster serves.
//!
//! The controller learns the [`ServedApis`] when it starts (one GET per CRD), keeps them in the
//! reconcile context and asks again every [`REFRESH`] on its own timer, never inside a reconcile
//! ([`crate::reconcile::Context::relearn_apis`]); a change restarts the controller, so the new
//! kind is watched and every stack is reconciled again. Kinds the cluster does not serve are
//! never listed. This module holds no reconcile logic and writes nothing.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource};
use std::time::Duration;

/// How often the controller asks again which optional APIs the cluster serves.
pub const REFRESH: Duration = Duration::from_secs(30);

/// API group of the Gateway API.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// API group of the Prometheus Operator.
pub const MONITORING_GROUP: &str = "monitoring.coreos.com";
/// API group of KEDA.
pub const KEDA_GROUP: &str = "keda.sh";

/// An API that exists only when its CRD is installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OptionalApi {
    /// `gateway.networking.k8s.io/v1` HTTPRoute.
    HttpRoute,
    /// `monitoring.coreos.com/v1` ServiceMonitor.
    ServiceMonitor,
    /// `monitoring.coreos.com/v1` PrometheusRule.
    PrometheusRule,
    /// `keda.sh/v1alpha1` ScaledObject.
    ScaledObject,
    /// `keda.sh/v1alpha1` TriggerAuthentication.
    TriggerAuthentication,
}

impl OptionalApi {
    /// Every optional API.
    pub const ALL: [Self; 5] = [
        Self::HttpRoute,
        Self::ServiceMonitor,
        Self::PrometheusRule,
        Self::ScaledObject,
        Self::TriggerAuthentication,
    ];

    /// The resource, for a dynamic `Api` and for the objects' `apiVersion`/`kind`.
    pub fn resource(self) -> ApiResource {
        let (group, version, kind, plural) = match self {
            Self::HttpRoute => (GATEWAY_GROUP, "v1", "HTTPRoute", "httproutes"),
            Self::ServiceMonitor => (MONITORING_GROUP, "v1", "ServiceMonitor", "servicemonitors"),
            Self::PrometheusRule => (MONITORING_GROUP, "v1", "PrometheusRule", "prometheusrules"),
            Self::ScaledObject => (KEDA_GROUP, "v1alpha1", "ScaledObject", "scaledobjects"),
            Self::TriggerAuthentication => (
                KEDA_GROUP,
                "v1alpha1",
                "TriggerAuthentication",
                "triggerauthentications",
            ),
        };
        ApiResource {
            group: group.to_owned(),
            version: version.to_owned(),
            api_version: format!("{group}/{version}"),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
        }
    }

    /// The condition reason (and error kind) of a stack that asks for it where it is not served.
    pub fn missing_reason(self) -> &'static str {
        use crate::reconcile::status::reason;
        match self {
            Self::HttpRoute => reason::GATEWAY_API_MISSING,
            Self::ServiceMonitor | Self::PrometheusRule => reason::PROMETHEUS_OPERATOR_MISSING,
            Self::ScaledObject | Self::TriggerAuthentication => reason::KEDA_MISSING,
        }
    }

    /// Name of the CRD that serves it.
    pub fn crd_name(self) -> &'static str {
        match self {
            Self::HttpRoute => "httproutes.gateway.networking.k8s.io",
            Self::ServiceMonitor => "servicemonitors.monitoring.coreos.com",
            Self::PrometheusRule => "prometheusrules.monitoring.coreos.com",
            Self::ScaledObject => "scaledobjects.keda.sh",
            Self::TriggerAuthentication => "triggerauthentications.keda.sh",
        }
    }
}

/// Which optional APIs the cluster serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServedApis {
    /// HTTPRoute is served.
    pub http_route: bool,
    /// ServiceMonitor is served.
    pub service_monitor: bool,
    /// PrometheusRule is served.
    pub prometheus_rule: bool,
    /// KEDA's ScaledObject is served.
    pub scaled_object: bool,
    /// KEDA's TriggerAuthentication is served.
    pub trigger_authentication: bool,
}

impl ServedApis {
    /// Every optional API served (for `render` and tests).
    pub const ALL: Self = Self {
        http_route: true,
        service_monitor: true,
        prometheus_rule: true,
        scaled_object: true,
        trigger_authentication: true,
    };

    /// Whether both KEDA kinds the operator renders are served.
    pub fn keda(self) -> bool {
        self.scaled_object && self.trigger_authentication
    }

    /// Whether `api` is served.
    pub fn serves(self, api: OptionalApi) -> bool {
        match api {
            OptionalApi::HttpRoute => self.http_route,
            OptionalApi::ServiceMonitor => self.service_monitor,
            OptionalApi::PrometheusRule => self.prometheus_rule,
            OptionalApi::ScaledObject => self.scaled_object,
            OptionalApi::TriggerAuthentication => self.trigger_authentication,
        }
    }

    /// Asks the API server (one GET per CRD).
    pub async fn discover(client: &Client) -> Result<Self, kube::Error> {
        let mut served = Self::default();
        for api in OptionalApi::ALL {
            let serves = crd_serves(client, api.crd_name(), &api.resource().version).await?;
            match api {
                OptionalApi::HttpRoute => served.http_route = serves,
                OptionalApi::ServiceMonitor => served.service_monitor = serves,
                OptionalApi::PrometheusRule => served.prometheus_rule = serves,
                OptionalApi::ScaledObject => served.scaled_object = serves,
                OptionalApi::TriggerAuthentication => served.trigger_authentication = serves,
            }
        }
        Ok(served)
    }
}

/// Whether the CRD `name` exists and serves `version`.
pub async fn crd_serves(client: &Client, name: &str, version: &str) -> Result<bool, kube::Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    Ok(api.get_opt(name).await?.is_some_and(|crd| {
        crd.spec
            .versions
            .iter()
            .any(|v| v.name == version && v.served)
    }))
}
