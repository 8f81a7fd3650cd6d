//! Plan step 1 (pure): turn a `PingPongStack` into a [`ValidatedStack`] or a [`ValidationError`].
//!
//! This checks everything the CRD schema cannot: child-name lengths against the 63-character DNS
//! label limit, quantities that parse and requests that fit their limits, reserved or duplicate
//! environment variables, TLS without a host, name clashes with the credentials Secret, a broker
//! image older than RabbitMQ 3.10 for a cluster. It also resolves every default (images from the
//! operator configuration, resources, how the broker's nodes find each other), so the builders
//! never look at an `Option` in the spec. No client, clock, randomness or environment here.

mod broker;
mod error;
pub mod postgres_major;
pub mod rabbitmq_upgrade;
mod settings;
mod store;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;

pub use broker::PeerDiscovery;
pub use error::ValidationError;
pub use settings::{
    AppSettings, BrokerSettings, CacheSettings, DataStorage, GatewaySettings, IngressSettings,
    MonitoringSettings, PostgresSettings, RedisSettings, StoreSettings, ValidatedStack,
    ping_defaults, pong_defaults, postgres_defaults, postgres_exporter_resources,
    rabbitmq_defaults, redis_defaults,
};

use crate::crd::{CacheSpec, ComponentImages, PingPongStack, PostgresSpec, QueueType};
use crate::images::{self, Images};
use crate::reconcile::names::ChildNames;
use crate::reconcile::quantity;

/// Maximum length of a DNS label (RFC 1123), which bounds every child name.
pub const DNS_LABEL_MAX: usize = 63;

/// Environment variables the operator sets on ping and pong; a user `env` entry with one of these
/// names is rejected rather than silently ignored (it would otherwise replace broker credentials
/// or addresses, or the store and cache settings).
pub const RESERVED_ENV: [&str; 23] = [
    "LISTEN_ADDR",
    "RABBITMQ_ADDRESSES",
    "RABBITMQ_HOST",
    "RABBITMQ_PORT",
    "RABBITMQ_VHOST",
    "RABBITMQ_DEFAULT_USER",
    "RABBITMQ_DEFAULT_PASS",
    "RABBITMQ_DEFAULT_USER_FILE",
    "RABBITMQ_DEFAULT_PASS_FILE",
    "RABBITMQ_QUEUE",
    "RABBITMQ_QUEUE_TYPE",
    "RABBITMQ_PARTITIONS",
    "PONG_MAX_MESSAGES",
    "PONG_STORE",
    "PGHOST",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSWORD_FILE",
    "DATABASE_URL",
    "REDIS_URL",
    "REDIS_URL_FILE",
];

/// Validates `stack` and resolves its defaults (images from the operator's `operator` defaults,
/// or, under `upgradePolicy: Manual`, the defaults the stack recorded: [`images::for_stack`]).
pub fn validate(
    stack: &PingPongStack,
    operator: &Images,
) -> Result<ValidatedStack, ValidationError> {
    let defaults = &images::for_stack(stack, operator);
    let name = stack
        .metadata
        .name
        .clone()
        .ok_or(ValidationError::MissingName)?;
    let namespace = stack
        .namespace()
        .ok_or_else(|| ValidationError::MissingNamespace { name: name.clone() })?;
    check_stack_name(&name)?;
    let spec = &stack.spec;

    let names = ChildNames::new(&name, spec.rabbitmq.credentials_secret.as_deref());
    check_name_lengths(&name, &names)?;
    if let Some(user) = &spec.rabbitmq.credentials_secret
        && names.operator_owned().any(|owned| owned == user.as_str())
        && *user != names.default_credentials_secret()
    {
        return Err(ValidationError::CredentialsSecretConflict { name: user.clone() });
    }

    check_replicas(
        "spec.ping.replicas",
        spec.ping.replicas,
        0,
        100,
        "must be 0 to 100",
    )?;
    store::check_pong_replicas(&spec.pong)?;
    store::check_pong_autoscaling(&spec.pong)?;
    check_replicas(
        "spec.rabbitmq.replicas",
        spec.rabbitmq.replicas,
        1,
        9,
        "must be 1 to 9",
    )?;
    // The CRD's CEL rules reject these at admission; a stack stored before the rules existed
    // is refused here with the same reason.
    if spec.rabbitmq.replicas == 2 {
        return Err(ValidationError::InvalidReplicas {
            field: "spec.rabbitmq.replicas",
            value: 2,
            reason: "must not be 2: a two-node RabbitMQ cluster loses its majority when either \
                     node is down; use 1, 3 or more",
        });
    }
    if spec.rabbitmq.storage.ephemeral && spec.rabbitmq.replicas > 1 {
        return Err(ValidationError::InvalidReplicas {
            field: "spec.rabbitmq.replicas",
            value: spec.rabbitmq.replicas.into(),
            reason: "must be 1 with spec.rabbitmq.storage.ephemeral: a restarted node of an \
                     ephemeral cluster comes back empty and cannot rejoin",
        });
    }
    if !(1..=10_000_000).contains(&spec.pong.max_messages) {
        return Err(ValidationError::InvalidReplicas {
            field: "spec.pong.maxMessages",
            value: spec.pong.max_messages,
            reason: "must be 1 to 10000000",
        });
    }
    check_queue(&spec.rabbitmq.queue)?;
    let partitions = partitions(spec.rabbitmq.partitions)?;
    // An explicit Gateway replaces the Ingress unless the spec asks for both.
    let ingress_wanted = spec.ingress.enabled.unwrap_or(spec.gateway.is_none());
    if ingress_wanted && spec.ingress.tls_secret.is_some() && spec.ingress.host.is_none() {
        return Err(ValidationError::TlsWithoutHost);
    }
    check_host("spec.ingress.host", spec.ingress.host.as_deref())?;
    check_host(
        "spec.gateway.hostname",
        spec.gateway.as_ref().and_then(|g| g.hostname.as_deref()),
    )?;

    let ping = AppSettings {
        image: image(
            "spec.ping.image",
            spec.ping.image.as_deref(),
            &defaults.ping,
        )?,
        replicas: spec.ping.replicas,
        resources: resources(
            "spec.ping.resources",
            spec.ping.resources.as_ref(),
            ping_defaults,
        )?,
        env: user_env("spec.ping.env", &spec.ping.env)?,
    };
    let pong = AppSettings {
        image: image(
            "spec.pong.image",
            spec.pong.image.as_deref(),
            &defaults.pong,
        )?,
        // The autoscaler's last decision while `spec.pong.autoscaling` is set.
        replicas: crate::autoscale::applied_replicas(stack),
        resources: resources(
            "spec.pong.resources",
            spec.pong.resources.as_ref(),
            pong_defaults,
        )?,
        env: user_env("spec.pong.env", &spec.pong.env)?,
    };
    let mut store = store::store_settings(&spec.pong, &names, defaults)?;
    let mut postgres_data_major = stack
        .status
        .as_ref()
        .and_then(|s| s.store.as_ref())
        .and_then(|s| s.data_major_version);
    let mut refused = Vec::new();
    if let StoreSettings::ProvisionedPostgres(postgres) = &mut store {
        let ephemeral = postgres.storage == DataStorage::Ephemeral;
        let decision = postgres_major::decide(stack, &postgres.image, ephemeral);
        postgres.image = decision.image;
        postgres_data_major = decision.data_major;
        refused.extend(decision.refused);
    }
    let cache = store::cache_settings(&spec.pong, &names, defaults)?;
    let storage = if spec.rabbitmq.storage.ephemeral {
        DataStorage::Ephemeral
    } else {
        let size = &spec.rabbitmq.storage.size;
        check_quantity("spec.rabbitmq.storage.size".to_owned(), size)?;
        DataStorage::Persistent {
            size: size.clone(),
            storage_class_name: spec.rabbitmq.storage.storage_class_name.clone(),
        }
    };
    let broker_image = image(
        "spec.rabbitmq.image",
        spec.rabbitmq.image.as_deref(),
        &defaults.rabbitmq,
    )?;
    broker::check_cluster_image(
        &broker_image,
        spec.rabbitmq.image.is_some(),
        spec.rabbitmq.replicas,
    )?;
    // A running broker moves only by a version step RabbitMQ supports; otherwise it keeps the
    // image it runs and the refusal is reported (every other child is applied).
    let broker_decision = rabbitmq_upgrade::decide(stack, &broker_image);
    let broker_image = broker_decision.image;
    refused.extend(broker_decision.refused);
    let rabbitmq = BrokerSettings {
        peer_discovery: broker::peer_discovery(&broker_image, spec.rabbitmq.replicas),
        image: broker_image,
        replicas: spec.rabbitmq.replicas,
        queue: spec.rabbitmq.queue.clone(),
        storage,
        resources: resources(
            "spec.rabbitmq.resources",
            spec.rabbitmq.resources.as_ref(),
            rabbitmq_defaults,
        )?,
        user_credentials: spec.rabbitmq.credentials_secret.is_some(),
        queue_type: spec
            .rabbitmq
            .queue_type
            .unwrap_or_else(|| QueueType::default_for(spec.rabbitmq.replicas)),
        partitions,
    };

    let images = component_images(spec, operator, (&ping, &pong, &rabbitmq), &store, &cache);
    Ok(ValidatedStack {
        images,
        postgres_data_major,
        refused,
        selectors: crate::labels::SelectorPlan::default(),
        uid: stack.metadata.uid.clone(),
        generation: stack.metadata.generation,
        names,
        ping,
        pong,
        pong_max_messages: spec.pong.max_messages,
        store,
        cache,
        rabbitmq,
        ingress: ingress_wanted.then(|| IngressSettings {
            class_name: spec.ingress.class_name.clone(),
            host: spec.ingress.host.clone(),
            tls_secret: spec.ingress.tls_secret.clone(),
            requested: spec.ingress.enabled == Some(true),
        }),
        gateway: spec.gateway.as_ref().map(|g| GatewaySettings {
            parent_ref: g.parent_ref.clone(),
            hostname: g.hostname.clone(),
        }),
        monitoring: MonitoringSettings {
            service_monitor: spec.monitoring.service_monitor,
            service_monitor_labels: spec
                .monitoring
                .service_monitor_labels
                .iter()
                .filter(|(k, _)| !crate::labels::is_reserved(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            prometheus_rule: spec.monitoring.prometheus_rule,
        },
        tracing: spec.observability.tracing.clone(),
        paused: spec.paused,
        autoscaling: spec.pong.autoscaling.is_some(),
        keda: spec
            .pong
            .autoscaling
            .clone()
            .filter(|a| a.engine == crate::crd::AutoscalingEngine::Keda),
        name,
        namespace,
    })
}

/// `status.images` of the resolved settings: each image, whether the spec named it, and the
/// operator's current default beside it.
fn component_images(
    spec: &crate::crd::PingPongStackSpec,
    operator: &Images,
    (ping, pong, rabbitmq): (&AppSettings, &AppSettings, &BrokerSettings),
    store: &StoreSettings,
    cache: &Option<CacheSettings>,
) -> ComponentImages {
    let postgres_spec = match &spec.pong.store.postgres {
        Some(PostgresSpec::Provisioned(p)) => p.image.is_some(),
        _ => false,
    };
    let redis_spec = match &spec.pong.cache {
        Some(CacheSpec::Provisioned(r)) => r.image.is_some(),
        _ => false,
    };
    let postgres = store.provisioned();
    ComponentImages {
        ping: images::resolved_image(&ping.image, spec.ping.image.is_some(), &operator.ping),
        pong: images::resolved_image(&pong.image, spec.pong.image.is_some(), &operator.pong),
        rabbitmq: images::resolved_image(
            &rabbitmq.image,
            spec.rabbitmq.image.is_some(),
            &operator.rabbitmq,
        ),
        postgres: postgres
            .map(|p| images::resolved_image(&p.image, postgres_spec, &operator.postgres)),
        postgres_exporter: postgres
            .filter(|p| p.metrics)
            .map(|p| images::resolved_image(&p.exporter_image, false, &operator.postgres_exporter)),
        redis: match cache {
            Some(CacheSettings::Provisioned(r)) => Some(images::resolved_image(
                &r.image,
                redis_spec,
                &operator.redis,
            )),
            _ => None,
        },
    }
}

/// A stack name prefixes Service names, which must be DNS-1035 labels.
fn check_stack_name(name: &str) -> Result<(), ValidationError> {
    let bytes = name.as_bytes();
    let ok = bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::InvalidName {
            name: name.to_owned(),
        })
    }
}

fn check_name_lengths(stack: &str, names: &ChildNames) -> Result<(), ValidationError> {
    let revision_label = (
        "StatefulSet revision label",
        names.rabbitmq_revision_label_len(),
    );
    let lengths: Vec<(&str, usize)> = names
        .operator_owned()
        .map(|n| (n, n.len()))
        .chain(std::iter::once(revision_label))
        .collect();
    let longest_suffix = lengths
        .iter()
        .map(|(_, len)| len.saturating_sub(stack.len()))
        .max()
        .unwrap_or(0);
    match lengths.iter().find(|(_, len)| *len > DNS_LABEL_MAX) {
        Some((child, len)) => Err(ValidationError::NameTooLong {
            stack: stack.to_owned(),
            child: (*child).to_owned(),
            len: *len,
            max_stack_len: DNS_LABEL_MAX.saturating_sub(longest_suffix),
        }),
        None => Ok(()),
    }
}

/// A host name as Ingress and HTTPRoute accept it: lowercase DNS labels separated by dots,
/// optionally starting with the wildcard label `*.`.
fn check_host(field: &'static str, host: Option<&str>) -> Result<(), ValidationError> {
    let Some(host) = host else {
        return Ok(());
    };
    let name = host.strip_prefix("*.").unwrap_or(host);
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= DNS_LABEL_MAX
            && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
    };
    if host.len() <= 253 && name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(ValidationError::InvalidHost {
            field,
            host: host.to_owned(),
        })
    }
}

fn check_replicas(
    field: &'static str,
    value: i32,
    min: i32,
    max: i32,
    reason: &'static str,
) -> Result<(), ValidationError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ValidationError::InvalidReplicas {
            field,
            value: value.into(),
            reason,
        })
    }
}

/// The partition count (default 1), 1 to 32 as the schema says (also read by the autoscaler).
pub fn partitions(asked: Option<i32>) -> Result<u8, ValidationError> {
    let partitions = asked.unwrap_or(1);
    u8::try_from(partitions)
        .ok()
        .filter(|count| (1..=32).contains(count))
        .ok_or(ValidationError::InvalidPartitions { partitions })
}

fn check_queue(queue: &str) -> Result<(), ValidationError> {
    let invalid = |reason| {
        Err(ValidationError::InvalidQueue {
            queue: queue.to_owned(),
            reason,
        })
    };
    if queue.is_empty() {
        return invalid("is empty; name the queue");
    }
    if queue.len() > 200 {
        return invalid("is longer than 200 characters");
    }
    if queue.starts_with("amq.") {
        return invalid("starts with 'amq.', which RabbitMQ reserves");
    }
    if !queue
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return invalid("may only contain letters, digits, '.', '_', ':' and '-'");
    }
    Ok(())
}

fn image(
    field: &'static str,
    given: Option<&str>,
    default: &str,
) -> Result<String, ValidationError> {
    let image = given.unwrap_or(default);
    if image.is_empty() || image.chars().any(char::is_whitespace) {
        return Err(ValidationError::InvalidImage {
            field,
            image: image.to_owned(),
        });
    }
    Ok(image.to_owned())
}

fn check_quantity(field: String, value: &Quantity) -> Result<(), ValidationError> {
    quantity::parse(&value.0)
        .map(|_| ())
        .ok_or_else(|| ValidationError::InvalidQuantity {
            field,
            value: value.0.clone(),
        })
}

fn resources(
    field: &'static str,
    given: Option<&ResourceRequirements>,
    default: fn() -> ResourceRequirements,
) -> Result<ResourceRequirements, ValidationError> {
    let Some(given) = given else {
        return Ok(default());
    };
    let empty = BTreeMap::new();
    let requests = given.requests.as_ref().unwrap_or(&empty);
    let limits = given.limits.as_ref().unwrap_or(&empty);
    for (kind, map) in [("requests", requests), ("limits", limits)] {
        for (resource, value) in map {
            check_quantity(format!("{field}.{kind}.{resource}"), value)?;
        }
    }
    for (resource, request) in requests {
        if let Some(limit) = limits.get(resource)
            && quantity::parse(&request.0) > quantity::parse(&limit.0)
        {
            return Err(ValidationError::RequestExceedsLimit {
                field,
                resource: resource.clone(),
                request: request.0.clone(),
                limit: limit.0.clone(),
            });
        }
    }
    Ok(given.clone())
}

fn user_env(field: &'static str, env: &[EnvVar]) -> Result<Vec<EnvVar>, ValidationError> {
    let mut seen = BTreeSet::new();
    for var in env {
        if RESERVED_ENV.contains(&var.name.as_str()) {
            return Err(ValidationError::ReservedEnv {
                field,
                name: var.name.clone(),
            });
        }
        if !seen.insert(var.name.as_str()) {
            return Err(ValidationError::DuplicateEnv {
                field,
                name: var.name.clone(),
            });
        }
    }
    Ok(env.to_vec())
}
