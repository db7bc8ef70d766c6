// Package orchestrator runs durable tasks: one piece of agent work each,
// with a journal in JetStream that records every step before its effect.
//
// It is the floor above the pipeline. A hosted agent's loop (model, tools,
// model again) reaches models and tools only by handing Actions to the
// pipeline, with a token bound to the task, so every step is governed like
// an external agent's call: identity, policy, budgets, redaction, audit.
//
// The substrate holds three things per task:
//
//   - the task record, in the corral_tasks bucket: state, usage, limits;
//     every replica mirrors the bucket, which is how listings, limits and
//     cancellations are read without a round trip;
//   - the journal, the subject corral.task.<id> of the CORRAL_JOURNAL
//     stream: every step (a model call, a tool call, their answers, state
//     changes, a human's messages) once, in order. It is the truth the record
//     is built from, the task's event stream, and what a worker replays
//     after a crash. Each append is guarded by the subject's last sequence,
//     so a worker that lost the task to another cannot add a step;
//   - a work message, on corral.work.<placement>.<id> of the CORRAL_WORK
//     work queue, while the task wants a worker: its ack deadline, renewed
//     while the task runs, is the worker's lease.
//
// docs/tasks.md says what is and is not repeated after a crash, and why.
package orchestrator
