#!/usr/bin/env bash
# Show that each loom model added for the reliability and engine work fails on the bug it is about.
#
#   scripts/loom-mutations.sh           # every mutation, at preemption bound 2
#   scripts/loom-mutations.sh hold      # only the mutations whose name contains "hold"
#
# Each mutation is a deliberate bug made, one at a time, in a scratch work tree of the committed
# HEAD (the checkout itself is never touched); the script runs the model that should catch it and
# reports CAUGHT when the model fails, MISSED when it passes. It exits non-zero if any mutation
# was missed. The loom build goes to its own target directory, shared by the mutations, so each
# one only rebuilds the crate it changes. docs/loom.md has the table and the figures.
set -uo pipefail
cd "$(dirname "$0")/.."
filter=${1:-}
export RUSTFLAGS="--cfg loom --cfg crossbeam_loom ${RUSTFLAGS:-}"
export LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-2}
export CARGO_TARGET_DIR="${LOOM_TARGET_DIR:-$PWD/target}/loom-mutations"
scratch=$(mktemp -d)
trap 'git worktree remove --force "$scratch" >/dev/null 2>&1; rm -rf "$scratch"' EXIT
git worktree add --detach "$scratch" HEAD >/dev/null 2>&1
missed=0

# mutate NAME MODEL FILE PERL-SUBSTITUTION...: apply the substitutions (perl -0, so they may span
# lines; each must match), run MODEL, restore the tree.
mutate() {
    local name=$1 model=$2 file=$3
    shift 3
    [[ -n "$filter" && "$name" != *"$filter"* ]] && return
    for sub in "$@"; do
        local before
        before=$(sha1sum "$scratch/$file")
        perl -0pi -e "$sub" "$scratch/$file"
        if [[ "$(sha1sum "$scratch/$file")" == "$before" ]]; then
            echo "mutation $name: '$sub' matched nothing in $file (the code moved: update the script)"
            missed=1
            git -C "$scratch" checkout -q -- .
            return
        fi
    done
    local start=$SECONDS log
    log=$(cd "$scratch" && timeout 900 cargo test -p mvstm-core --release --test loom -- \
        --exact "$model" --test-threads=1 2>&1)
    local status=$?
    local why
    # The message of the first panic: the line after "panicked at <place>:".
    why=$(awk '/panicked at/ { getline; print; exit }' <<<"$log")
    if [[ $status -ne 0 ]]; then
        echo "CAUGHT  $name by $model in $((SECONDS - start)) s: ${why:-test failed}"
    else
        echo "MISSED  $name: $model passed"
        missed=1
    fi
    git -C "$scratch" checkout -q -- .
}

mutate retry_until_rebases_to_now retry_until_vs_writer_during_the_predicate \
    crates/mvstm-core/src/parking.rs \
    's/w\.stamp = stamp;/w.stamp = { let _ = stamp; w.current().0 };/'
mutate retry_all_wakes_on_any retry_all_wakes_once_both_changed \
    crates/mvstm-core/src/parking.rs \
    's/if changed == group\.len\(\) \{/if changed > 0 {/'
mutate retry_on_waits_on_nothing retry_on_wakes_on_a_variable_it_did_not_read \
    crates/mvstm-core/src/txn.rs \
    's/self\.wait\.any\.extend\(entries\);/drop(entries);/'
mutate retry_for_waits_on_nothing retry_for_wakes_on_a_change \
    crates/mvstm-core/src/txn.rs \
    's/(self\.wait_used = true;\n\s*)Err\(StmError::retry\(RetryKind::Reads\)\)/$1Err(StmError::retry(RetryKind::Explicit))/'
mutate or_else_waits_on_the_last_branch or_else_rolls_back_a_branch_and_waits_on_the_union \
    crates/mvstm-core/src/txn.rs \
    's/let write_mark = self\.writes\.len\(\);/let write_mark = self.writes.len();\n        let read_mark = self.reads.len();/' \
    's/(RetryKind::Reads \{\n\s*self\.wait\.on_reads = true;\n\s*self\.wait_used = true;\n\s*\})/$1\n                self.reads.truncate(read_mark);/'
mutate or_else_keeps_a_retried_branchs_writes or_else_rolls_back_a_branch_and_waits_on_the_union \
    crates/mvstm-core/src/txn.rs \
    's/self\.writes\.truncate\(write_mark\)/self.writes.truncate(usize::MAX)/'
mutate hold_ignored_by_writers an_on_commit_hold_keeps_writers_out \
    crates/mvstm-core/src/commit.rs \
    's/if !header\.held_shared\(\) \{/if true {/'
mutate hold_seen_by_validators an_on_commit_hold_is_shared_with_other_readers \
    crates/mvstm-core/src/commit.rs \
    's/let mut word = lock\.load\(\);/let mut word = if !wait_locked \&\& unsafe { r.header.as_ref() }.held_shared() { LockWord::locked_by(1 << 40) } else { lock.load() };/'
mutate priority_token_kept the_priority_token_is_taken_and_given_back \
    crates/mvstm-core/src/contention.rs \
    's/if self\.holds_priority \{\n\s*give_back\(self\.owner\);/if self.holds_priority {/'
mutate abort_not_final a_swallowed_abort_never_commits \
    crates/mvstm-core/src/txn.rs \
    's/self\.doomed = true;\n(\s*)Err\(StmError::abort\(\)\)/Err(StmError::abort())/'
mutate tbqueue_push_ignores_full tbqueue_of_one_hands_over_two_items_in_order \
    crates/mvstm-collections/src/ring.rs \
    's/if tx\.read\(slots\.slot\(tail\)\)\?\.is_some\(\) \{/if false \&\& tx.read(slots.slot(tail))?.is_some() {/'

mutate undecided_read_as_old a_reader_floors_an_undecided_commit_and_the_writer_restamps \
    crates/mvstm-core/src/clock.rs \
    's/State::Floor\(_\) \| State::Open => floor_word\(rv\),/State::Floor(_) | State::Open => return 0,/'
mutate decide_ignores_the_floor a_reader_floors_an_undecided_commit_and_the_writer_restamps \
    crates/mvstm-core/src/clock.rs \
    's/State::Floor\(f\) if f >= wv => \{/State::Floor(f) if f >= wv \&\& false => {/'
mutate stamp_before_link a_reader_floors_an_undecided_commit_and_the_writer_restamps \
    crates/mvstm-core/src/commit.rs \
    's/self\.link_writes\(\);\n(\s*)let mut wv = clock::take_stamp\(\);\n(\s*)self\.check_waiters\(\);\n(\s*)loop \{/let mut wv = clock::take_stamp();\n$1self.link_writes();\n$2self.check_waiters();\n$3loop {/'
mutate async_first_look_skipped async_retry_registration_vs_committing_writer \
    crates/mvstm-core/src/future.rs \
    's/Step::Wait\(mut registered\) => match registered\.poll\(cx\) \{/Step::Wait(mut registered) => match { let _ = \&mut registered; Poll::<Duration>::Pending } {/'
mutate task_waiters_not_woken async_retry_registration_vs_committing_writer \
    crates/mvstm-core/src/parking.rs \
    's/Waiter::Task\(task\) => task\.wake\(\),/Waiter::Task(_task) => {}/'
mutate task_woken_outside_the_slot_lock async_wait_dropped_vs_committing_writer \
    crates/mvstm-core/src/timer.rs \
    's/if let Some\(waker\) = &\*self\.waker\.lock\(\) \{/let held = self.waker.lock().clone();\n        if let Some(waker) = \&held {/'
mutate dropped_task_wait_keeps_its_waker async_wait_dropped_vs_committing_writer \
    crates/mvstm-core/src/parking.rs \
    's/            task\.waker\.clear\(\);\n//'
mutate single_store_skips_the_wake a_store_wakes_a_retry_waiter \
    crates/mvstm-core/src/commit.rs \
    's/let wake = parking::has_waiters\(var\);/let wake = { let _ = parking::has_waiters(var); false };/'
mutate single_update_locks_any_word update_and_compare_and_set_vs_a_transaction \
    crates/mvstm-core/src/commit.rs \
    's/if !var\.lock\.try_lock_from_unlocked\(seen, self\.committer\.owner\) \{/let seen = var.lock.load();\n        if seen.is_locked() || !var.lock.try_lock_from_unlocked(seen, self.committer.owner) {/'
mutate snapshot_taken_before_the_slot a_starting_snapshot_holds_the_horizon_back \
    crates/mvstm-core/src/reclaim.rs \
    's/crate::sync::seq_cst_point\(\);\n(\s*)clock::snapshot_seq_cst\(\)/crate::sync::seq_cst_point();\n$1bound/'
mutate horizon_ignores_the_slots reclamation_vs_reader_holding_an_old_snapshot \
    crates/mvstm-core/src/reclaim.rs \
    's/\.fold\(wv, u64::min\)/.fold(wv, |oldest, _| oldest)/'

exit $missed
