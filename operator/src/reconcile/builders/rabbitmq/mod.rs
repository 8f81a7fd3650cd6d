//! The RabbitMQ broker: ConfigMap, definitions Secret, headless and client Services,
//! StatefulSet.

mod config;
mod definitions;
mod services;
mod statefulset;

pub use config::{
    ENABLED_PLUGINS_KEY, RABBITMQ_CONF_KEY, build_rabbitmq_config, enabled_plugins, rabbitmq_conf,
};
pub use definitions::{
    DEFINITIONS_DIR, DEFINITIONS_KEY, build_rabbitmq_definitions_secret, declared_users,
    definitions_json,
};
pub use services::{build_rabbitmq_headless_service, build_rabbitmq_service};
pub use statefulset::build_rabbitmq_statefulset;
