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
    let port_name = super::names::port_name(spec.auth.as_ref().is_some_and(|a| a.tls.is_some()));
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(spec.service.type_.as_str().into()),
            selector: Some(names.selector()),
            ports: Some(vec![ServicePort {
                name: Some(port_name.into()),
                port: spec.service.port,
                target_port: Some(IntOrString::String(port_name.into())),
                node_port: spec.service.node_port,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use promscale_crds::stack::{AuthSpec, DatabaseSpec, TlsSpec};
    use promscale_crds::PromscaleStack;

    fn port_name(auth: Option<AuthSpec>) -> (Option<String>, Option<IntOrString>) {
        let spec = PromscaleStackSpec {
            connector: Default::default(),
            database: DatabaseSpec::default(),
            defaults: Default::default(),
            service: Default::default(),
            auth,
            tenant_limits: Vec::new(),
        };
        let mut stack = PromscaleStack::new("metrics", spec.clone());
        stack.metadata.namespace = Some("monitoring".into());
        stack.metadata.uid = Some("0a1b2c3d".into());
        let names = StackNames::of(&stack).unwrap();
        let port = service(&names, &spec).spec.unwrap().ports.unwrap().remove(0);
        (port.name, port.target_port)
    }

    #[test]
    fn the_port_is_named_after_its_protocol() {
        let named = |name: &str| (Some(name.to_string()), Some(IntOrString::String(name.into())));
        assert_eq!(port_name(None), named("http"));
        let tls = AuthSpec {
            tls: Some(TlsSpec {
                secret_name: "metrics-tls".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(port_name(Some(tls)), named("https"));
    }
}
