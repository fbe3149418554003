//! The one integration-test binary of aiops-assets.

mod support;

mod alertmanager;
mod dashboard;
mod detection;
mod embedded;
mod floor;
mod render;
mod tools;
