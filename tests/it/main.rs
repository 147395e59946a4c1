//! ProcOS integration tests: one binary, against a real Camunda 7.24 engine and a real Docker
//! engine. The tests share one engine, booted by the binary itself through the kernel's code on
//! first use (or given in `PROCOS_TEST_ENGINE_URL`); tests about booting start engines of their
//! own.

mod bad_input;
mod cli;
mod compose;
mod docker;
mod end_to_end;
mod examples;
mod faults_network;
mod faults_restarts;
mod fleet;
mod http;
mod init_dir;
mod layout;
mod library;
mod llm;
mod namespace;
mod oauth2;
mod orchestration;
mod outputs;
mod reload;
mod sandbox;
mod sandbox_proxy;
mod scilab;
mod support;
mod tde;
mod traces;
mod unavailable;
mod unserved;
mod up;
mod worker;
