//! ProcOS integration tests: one binary, against a real Camunda 7.24 engine and a real Docker
//! engine. `scripts/test.sh` starts the shared engine and passes its URL in
//! `PROCOS_TEST_ENGINE_URL`; tests about booting start engines of their own.

mod cli;
mod compose;
mod docker;
mod end_to_end;
mod examples;
mod fleet;
mod init_dir;
mod llm;
mod orchestration;
mod sandbox;
mod sandbox_proxy;
mod scilab;
mod support;
mod up;
mod worker;
