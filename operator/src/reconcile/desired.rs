//! The desired state of one stack, grouped by component, and the one documented order in which
//! its children are applied, rendered and kept from orphan deletion.
//!
//! [`DesiredState::children`] is the only place that lists the children: apply, `render` and
//! the goldens walk it, and orphan deletion keeps exactly what the applier recorded while walking
//! it. A new child is one builder plus one line there (and, for a new kind, one [`ChildKind`]
//! variant). The order makes every object exist before something refers to it:
//! 1. Secrets (broker credentials, Erlang cookie, broker definitions, PostgreSQL credentials)
//!    and the broker ConfigMap — pods mount or read them;
//! 2. the broker's headless and client Services, then its StatefulSet — the headless Service
//!    must exist for stable pod DNS names;
//! 3. the provisioned PostgreSQL's Service and StatefulSet, the provisioned Redis's Service and
//!    Deployment — pong connects to them;
//! 4. ping and pong Services, then Deployments — their pods connect to the broker; then, with
//!    `autoscaling.engine: keda`, KEDA's TriggerAuthentication and the ScaledObject that
//!    targets the pong Deployment;
//! 5. the NetworkPolicies and PodDisruptionBudgets;
//! 6. the Ingress / HTTPRoute — only route traffic once the backends exist;
//! 7. ServiceMonitors;
//! 8. the PrometheusRule with the stack's alerts.
//!
//! This module is pure: no client, no clock.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PodTemplateSpec, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ApiResource, DynamicObject, ObjectMeta};
use serde::Serialize;

use super::yaml;
use crate::apis::OptionalApi;
use crate::labels::Component;

/// The broker's objects.
#[derive(Clone, Debug, PartialEq)]
pub struct BrokerObjects {
    /// Credentials Secret; `None` when it exists or is the user's.
    pub credentials_secret: Option<Secret>,
    /// Erlang-cookie Secret; `None` when it exists.
    pub erlang_cookie_secret: Option<Secret>,
    /// Definitions Secret (the broker user the nodes import at boot), applied on every
    /// reconcile so it follows the credentials Secret; `None` while the credentials are unknown.
    pub definitions_secret: Option<Secret>,
    /// ConfigMap with `rabbitmq.conf` and `enabled_plugins`.
    pub config: ConfigMap,
    /// Headless Service (stable pod DNS names).
    pub headless_service: Service,
    /// Client Service.
    pub service: Service,
    /// StatefulSet.
    pub statefulset: StatefulSet,
    /// NetworkPolicy guarding the broker.
    pub network_policy: NetworkPolicy,
    /// PodDisruptionBudget (replicas ≥ 2).
    pub pdb: Option<PodDisruptionBudget>,
    /// ServiceMonitor, when asked for and served.
    pub service_monitor: Option<DynamicObject>,
}

/// pong's provisioned PostgreSQL.
#[derive(Clone, Debug, PartialEq)]
pub struct PostgresObjects {
    /// Credentials Secret; `None` when it exists.
    pub secret: Option<Secret>,
    /// Headless Service.
    pub service: Service,
    /// StatefulSet.
    pub statefulset: StatefulSet,
    /// NetworkPolicy admitting only pong.
    pub network_policy: NetworkPolicy,
}

/// pong's provisioned Redis.
#[derive(Clone, Debug, PartialEq)]
pub struct RedisObjects {
    /// Service.
    pub service: Service,
    /// Deployment.
    pub deployment: Deployment,
    /// NetworkPolicy admitting only pong.
    pub network_policy: NetworkPolicy,
}

/// ping's or pong's objects.
#[derive(Clone, Debug, PartialEq)]
pub struct AppObjects {
    /// Service.
    pub service: Service,
    /// Deployment.
    pub deployment: Deployment,
    /// NetworkPolicy: the HTTP port in; DNS, the broker and pong's provisioned servers out.
    pub network_policy: NetworkPolicy,
    /// PodDisruptionBudget (replicas ≥ 2).
    pub pdb: Option<PodDisruptionBudget>,
    /// ServiceMonitor, when asked for and served.
    pub service_monitor: Option<DynamicObject>,
}

/// The routes in front of ping and pong.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteObjects {
    /// Ingress, when enabled.
    pub ingress: Option<Ingress>,
    /// HTTPRoute, when `spec.gateway` is set.
    pub http_route: Option<DynamicObject>,
}

/// KEDA's objects for pong (`spec.pong.autoscaling.engine: keda`).
#[derive(Clone, Debug, PartialEq)]
pub struct KedaObjects {
    /// TriggerAuthentication: the broker credentials, read from the stack's Secret.
    pub trigger_authentication: DynamicObject,
    /// ScaledObject targeting the pong Deployment.
    pub scaled_object: DynamicObject,
}

/// Every object the operator wants for one stack, grouped by component.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredState {
    /// The RabbitMQ broker.
    pub rabbitmq: BrokerObjects,
    /// The provisioned PostgreSQL, when pong's store is one.
    pub postgres: Option<PostgresObjects>,
    /// The provisioned Redis, when pong's cache is one.
    pub redis: Option<RedisObjects>,
    /// The ping service.
    pub ping: AppObjects,
    /// The pong service.
    pub pong: AppObjects,
    /// KEDA's objects scaling pong, with `autoscaling.engine: keda`.
    pub keda: Option<KedaObjects>,
    /// Ingress and HTTPRoute.
    pub routes: RouteObjects,
    /// PrometheusRule with the stack's alerts, when asked for and served.
    pub prometheus_rule: Option<DynamicObject>,
}

/// The kinds of child the operator writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChildKind {
    /// v1 Secret.
    Secret,
    /// v1 ConfigMap.
    ConfigMap,
    /// v1 Service.
    Service,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 Deployment.
    Deployment,
    /// networking.k8s.io/v1 NetworkPolicy.
    NetworkPolicy,
    /// policy/v1 PodDisruptionBudget.
    PodDisruptionBudget,
    /// networking.k8s.io/v1 Ingress.
    Ingress,
    /// gateway.networking.k8s.io/v1 HTTPRoute (optional API).
    HttpRoute,
    /// monitoring.coreos.com/v1 ServiceMonitor (optional API).
    ServiceMonitor,
    /// monitoring.coreos.com/v1 PrometheusRule (optional API).
    PrometheusRule,
    /// keda.sh/v1alpha1 ScaledObject (optional API).
    ScaledObject,
    /// keda.sh/v1alpha1 TriggerAuthentication (optional API).
    TriggerAuthentication,
}

impl ChildKind {
    /// Every kind.
    pub const ALL: [Self; 13] = [
        Self::Secret,
        Self::ConfigMap,
        Self::Service,
        Self::StatefulSet,
        Self::Deployment,
        Self::NetworkPolicy,
        Self::PodDisruptionBudget,
        Self::Ingress,
        Self::HttpRoute,
        Self::ServiceMonitor,
        Self::PrometheusRule,
        Self::ScaledObject,
        Self::TriggerAuthentication,
    ];

    /// The API resource, for dynamic applies, metadata-only watches, lists and deletes.
    pub fn api_resource(self) -> ApiResource {
        match self {
            Self::Secret => ApiResource::erase::<Secret>(&()),
            Self::ConfigMap => ApiResource::erase::<ConfigMap>(&()),
            Self::Service => ApiResource::erase::<Service>(&()),
            Self::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
            Self::Deployment => ApiResource::erase::<Deployment>(&()),
            Self::NetworkPolicy => ApiResource::erase::<NetworkPolicy>(&()),
            Self::PodDisruptionBudget => ApiResource::erase::<PodDisruptionBudget>(&()),
            Self::Ingress => ApiResource::erase::<Ingress>(&()),
            Self::HttpRoute => OptionalApi::HttpRoute.resource(),
            Self::ServiceMonitor => OptionalApi::ServiceMonitor.resource(),
            Self::PrometheusRule => OptionalApi::PrometheusRule.resource(),
            Self::ScaledObject => OptionalApi::ScaledObject.resource(),
            Self::TriggerAuthentication => OptionalApi::TriggerAuthentication.resource(),
        }
    }

    /// The Kubernetes kind (also the `kind` metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Secret => "Secret",
            Self::ConfigMap => "ConfigMap",
            Self::Service => "Service",
            Self::StatefulSet => "StatefulSet",
            Self::Deployment => "Deployment",
            Self::NetworkPolicy => "NetworkPolicy",
            Self::PodDisruptionBudget => "PodDisruptionBudget",
            Self::Ingress => "Ingress",
            Self::HttpRoute => "HTTPRoute",
            Self::ServiceMonitor => "ServiceMonitor",
            Self::PrometheusRule => "PrometheusRule",
            Self::ScaledObject => "ScaledObject",
            Self::TriggerAuthentication => "TriggerAuthentication",
        }
    }

    /// Whether orphan deletion may delete objects of this kind. Secrets are never deleted: the
    /// generated ones are applied only while missing (so they are not in every plan), and the
    /// PostgreSQL credentials must live as long as the retained data volume. The ConfigMap is in
    /// every plan.
    pub fn prunable(self) -> bool {
        !matches!(self, Self::Secret | Self::ConfigMap)
    }

    /// The optional API that serves this kind, if it is not built in.
    pub fn optional_api(self) -> Option<OptionalApi> {
        match self {
            Self::HttpRoute => Some(OptionalApi::HttpRoute),
            Self::ServiceMonitor => Some(OptionalApi::ServiceMonitor),
            Self::PrometheusRule => Some(OptionalApi::PrometheusRule),
            Self::ScaledObject => Some(OptionalApi::ScaledObject),
            Self::TriggerAuthentication => Some(OptionalApi::TriggerAuthentication),
            _ => None,
        }
    }
}

/// One child object, borrowed from a [`DesiredState`].
#[derive(Clone, Copy, Debug)]
pub enum Child<'a> {
    /// A generated Secret: created once, never overwritten.
    Secret(&'a Secret),
    /// A Secret rendered from others (the broker definitions): server-side applied every time.
    RenderedSecret(&'a Secret),
    /// A ConfigMap.
    ConfigMap(&'a ConfigMap),
    /// A Service.
    Service(&'a Service),
    /// A StatefulSet.
    StatefulSet(&'a StatefulSet),
    /// A Deployment.
    Deployment(&'a Deployment),
    /// A NetworkPolicy.
    NetworkPolicy(&'a NetworkPolicy),
    /// A PodDisruptionBudget.
    PodDisruptionBudget(&'a PodDisruptionBudget),
    /// An Ingress.
    Ingress(&'a Ingress),
    /// An HTTPRoute.
    HttpRoute(&'a DynamicObject),
    /// A ServiceMonitor.
    ServiceMonitor(&'a DynamicObject),
    /// A PrometheusRule.
    PrometheusRule(&'a DynamicObject),
    /// A KEDA ScaledObject.
    ScaledObject(&'a DynamicObject),
    /// A KEDA TriggerAuthentication.
    TriggerAuthentication(&'a DynamicObject),
}

impl<'a> Child<'a> {
    /// Its kind.
    pub fn kind(&self) -> ChildKind {
        match self {
            Self::Secret(_) | Self::RenderedSecret(_) => ChildKind::Secret,
            Self::ConfigMap(_) => ChildKind::ConfigMap,
            Self::Service(_) => ChildKind::Service,
            Self::StatefulSet(_) => ChildKind::StatefulSet,
            Self::Deployment(_) => ChildKind::Deployment,
            Self::NetworkPolicy(_) => ChildKind::NetworkPolicy,
            Self::PodDisruptionBudget(_) => ChildKind::PodDisruptionBudget,
            Self::Ingress(_) => ChildKind::Ingress,
            Self::HttpRoute(_) => ChildKind::HttpRoute,
            Self::ServiceMonitor(_) => ChildKind::ServiceMonitor,
            Self::PrometheusRule(_) => ChildKind::PrometheusRule,
            Self::ScaledObject(_) => ChildKind::ScaledObject,
            Self::TriggerAuthentication(_) => ChildKind::TriggerAuthentication,
        }
    }

    /// Its metadata (borrowed from the desired object, not from this handle).
    pub fn metadata(&self) -> &'a ObjectMeta {
        match *self {
            Self::Secret(o) | Self::RenderedSecret(o) => &o.metadata,
            Self::ConfigMap(o) => &o.metadata,
            Self::Service(o) => &o.metadata,
            Self::StatefulSet(o) => &o.metadata,
            Self::Deployment(o) => &o.metadata,
            Self::NetworkPolicy(o) => &o.metadata,
            Self::PodDisruptionBudget(o) => &o.metadata,
            Self::Ingress(o) => &o.metadata,
            Self::HttpRoute(o)
            | Self::ServiceMonitor(o)
            | Self::PrometheusRule(o)
            | Self::ScaledObject(o)
            | Self::TriggerAuthentication(o) => &o.metadata,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    /// The object as YAML that YAML 1.1 and 1.2 parsers read alike.
    pub fn to_yaml(&self) -> Result<String, serde_yaml::Error> {
        yaml::to_yaml(self)
    }
}

/// A child serializes as the object it holds (the YAML of `render`, the hash of the last apply).
impl Serialize for Child<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Secret(o) | Self::RenderedSecret(o) => o.serialize(serializer),
            Self::ConfigMap(o) => o.serialize(serializer),
            Self::Service(o) => o.serialize(serializer),
            Self::StatefulSet(o) => o.serialize(serializer),
            Self::Deployment(o) => o.serialize(serializer),
            Self::NetworkPolicy(o) => o.serialize(serializer),
            Self::PodDisruptionBudget(o) => o.serialize(serializer),
            Self::Ingress(o) => o.serialize(serializer),
            Self::HttpRoute(o)
            | Self::ServiceMonitor(o)
            | Self::PrometheusRule(o)
            | Self::ScaledObject(o)
            | Self::TriggerAuthentication(o) => o.serialize(serializer),
        }
    }
}

/// Why the desired state could not be written out.
#[derive(Debug, thiserror::Error)]
#[error("failed to serialize {kind} {name}")]
pub struct SerializeError {
    /// Object kind.
    pub kind: &'static str,
    /// Object name.
    pub name: String,
    /// The serializer's error.
    #[source]
    pub source: serde_yaml::Error,
}

impl DesiredState {
    /// The Secrets this plan writes (generated ones and the rendered definitions).
    pub fn secrets(&self) -> Vec<&Secret> {
        self.children()
            .into_iter()
            .filter_map(|(_, child)| match child {
                Child::Secret(secret) | Child::RenderedSecret(secret) => Some(secret),
                _ => None,
            })
            .collect()
    }

    /// The pod template of every workload (the broker's and PostgreSQL's StatefulSets, the
    /// Redis, ping and pong Deployments), for what the build stamps on all of them alike.
    pub fn pod_templates_mut(&mut self) -> Vec<&mut PodTemplateSpec> {
        let Self {
            rabbitmq,
            postgres,
            redis,
            ping,
            pong,
            keda: _,
            routes: _,
            prometheus_rule: _,
        } = self;
        let statefulsets = [
            Some(&mut rabbitmq.statefulset),
            postgres.as_mut().map(|p| &mut p.statefulset),
        ];
        let deployments = [
            redis.as_mut().map(|r| &mut r.deployment),
            Some(&mut ping.deployment),
            Some(&mut pong.deployment),
        ];
        statefulsets
            .into_iter()
            .flatten()
            .filter_map(|s| s.spec.as_mut().map(|spec| &mut spec.template))
            .chain(
                deployments
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d.spec.as_mut().map(|spec| &mut spec.template)),
            )
            .collect()
    }

    /// Every child with its component, in the documented apply order (see the module docs).
    /// Every struct is destructured without `..`, so a new object cannot be silently skipped.
    pub fn children(&self) -> Vec<(Component, Child<'_>)> {
        let Self {
            rabbitmq,
            postgres,
            redis,
            ping,
            pong,
            keda,
            routes,
            prometheus_rule,
        } = self;
        let BrokerObjects {
            credentials_secret,
            erlang_cookie_secret,
            definitions_secret,
            config,
            headless_service,
            service,
            statefulset,
            network_policy,
            pdb,
            service_monitor,
        } = rabbitmq;
        let RouteObjects {
            ingress,
            http_route,
        } = routes;
        use Child as C;
        use Component::{Gateway, Ping, Pong, Postgres, RabbitMq, Redis};
        let mut out = Vec::with_capacity(24);
        let mut push = |component, child: Option<_>| out.extend(child.map(|c| (component, c)));
        // 1. Secrets and the broker ConfigMap.
        push(RabbitMq, credentials_secret.as_ref().map(C::Secret));
        push(RabbitMq, erlang_cookie_secret.as_ref().map(C::Secret));
        push(RabbitMq, definitions_secret.as_ref().map(C::RenderedSecret));
        let pg = postgres.as_ref().map(|p| {
            let PostgresObjects {
                secret,
                service,
                statefulset,
                network_policy,
            } = p;
            (secret, service, statefulset, network_policy)
        });
        push(Postgres, pg.and_then(|p| p.0.as_ref()).map(C::Secret));
        push(RabbitMq, Some(C::ConfigMap(config)));
        // 2. Broker Services, then its StatefulSet.
        push(RabbitMq, Some(C::Service(headless_service)));
        push(RabbitMq, Some(C::Service(service)));
        push(RabbitMq, Some(C::StatefulSet(statefulset)));
        // 3. pong's provisioned PostgreSQL and Redis: Service, then workload.
        push(Postgres, pg.map(|p| C::Service(p.1)));
        push(Postgres, pg.map(|p| C::StatefulSet(p.2)));
        let rd = redis.as_ref().map(|r| {
            let RedisObjects {
                service,
                deployment,
                network_policy,
            } = r;
            (service, deployment, network_policy)
        });
        push(Redis, rd.map(|r| C::Service(r.0)));
        push(Redis, rd.map(|r| C::Deployment(r.1)));
        // 4. ping and pong: Service, then Deployment.
        let apps = [(Ping, ping), (Pong, pong)].map(|(component, app)| {
            let AppObjects {
                service,
                deployment,
                network_policy,
                pdb,
                service_monitor,
            } = app;
            (
                component,
                service,
                deployment,
                network_policy,
                pdb,
                service_monitor,
            )
        });
        for (component, service, deployment, _, _, _) in apps {
            push(component, Some(C::Service(service)));
            push(component, Some(C::Deployment(deployment)));
        }
        if let Some(KedaObjects {
            trigger_authentication,
            scaled_object,
        }) = keda
        {
            push(Pong, Some(C::TriggerAuthentication(trigger_authentication)));
            push(Pong, Some(C::ScaledObject(scaled_object)));
        }
        // 5. NetworkPolicies, then PodDisruptionBudgets.
        push(RabbitMq, Some(C::NetworkPolicy(network_policy)));
        push(Postgres, pg.map(|p| C::NetworkPolicy(p.3)));
        push(Redis, rd.map(|r| C::NetworkPolicy(r.2)));
        push(Ping, Some(C::NetworkPolicy(apps[0].3)));
        push(Pong, Some(C::NetworkPolicy(apps[1].3)));
        push(RabbitMq, pdb.as_ref().map(C::PodDisruptionBudget));
        for (component, _, _, _, pdb, _) in apps {
            push(component, pdb.as_ref().map(C::PodDisruptionBudget));
        }
        // 6. Routes, once the backends exist.
        push(Gateway, ingress.as_ref().map(C::Ingress));
        push(Gateway, http_route.as_ref().map(C::HttpRoute));
        // 7. ServiceMonitors.
        for (component, _, _, _, _, monitor) in apps {
            push(component, monitor.as_ref().map(C::ServiceMonitor));
        }
        push(RabbitMq, service_monitor.as_ref().map(C::ServiceMonitor));
        // 8. The alerts, once what they read is scraped.
        push(
            Component::Alerts,
            prometheus_rule.as_ref().map(C::PrometheusRule),
        );
        out
    }

    /// Every object as a YAML document (no `---` separators), in apply order.
    pub fn to_yaml_documents(&self) -> Result<Vec<String>, SerializeError> {
        self.children()
            .into_iter()
            .map(|(_, child)| {
                child.to_yaml().map_err(|source| SerializeError {
                    kind: child.kind().as_str(),
                    name: child.name().to_owned(),
                    source,
                })
            })
            .collect()
    }
}
