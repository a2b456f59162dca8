//! The Service Prometheus remote-writes to and queries through.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use promscale_crds::PromscaleStackSpec;

use super::names::StackNames;

pub fn service(names: &StackNames, spec: &PromscaleStackSpec) -> Service {
    let mut metadata = names.metadata();
    if !spec.service.annotations.is_empty() {
        metadata.annotations = Some(spec.service.annotations.clone());
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(spec.service.type_.as_str().into()),
            selector: Some(names.selector()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: spec.service.port,
                target_port: Some(IntOrString::String("http".into())),
                node_port: spec.service.node_port,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
