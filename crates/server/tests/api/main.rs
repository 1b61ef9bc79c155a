//! One integration-test binary (one link step) for the whole HTTP API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

extern crate wiresocket_server as server;

mod helpers;

mod apps;
mod audit;
mod backends;
mod crash;
mod dashboard;
mod dataplane;
mod edge;
mod human;
mod invites;
mod logs;
mod master_key;
mod master_key_command;
mod matrix;
mod members;
mod mfa;
mod no_500;
mod nodes;
mod oauth;
mod ops;
mod password_reset;
mod permissions;
mod purge;
mod ratelimit;
mod secrets_at_rest;
mod shapes;
mod tenants;
mod tls;
mod webhooks;
mod yclient;
