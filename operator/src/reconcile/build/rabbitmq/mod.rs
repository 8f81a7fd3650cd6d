//! The RabbitMQ broker: ConfigMap, headless and client Services, StatefulSet.

mod config;
mod services;
mod statefulset;

pub use config::{
    ENABLED_PLUGINS_KEY, RABBITMQ_CONF_KEY, build_rabbitmq_config, enabled_plugins, rabbitmq_conf,
};
pub use services::{build_rabbitmq_headless_service, build_rabbitmq_service};
pub use statefulset::build_rabbitmq_statefulset;
