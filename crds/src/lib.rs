//! Custom resource types shared by the operator and the connector (`PromscaleStack`,
//! `MetricPolicy`). Not defined yet: this crate is a placeholder in the workspace layout.
