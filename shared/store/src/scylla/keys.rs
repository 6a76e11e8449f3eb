//! Pure key arithmetic of the ScyllaDB tables: time buckets, shards, inbox scopes and
//! classes, and the listing cursor. No I/O, so all of it is unit-tested without a node.

use crate::{HumanTask, HumanTaskFilter, InboxStatus, StoreError};
use distorch_domain::WorkflowId;
use distorch_domain::workflow::TaskStatus;

const DAY_MS: i64 = 86_400_000;

/// Shards of a day of run listings (and of the dead-letter queue). Part of the schema:
/// changing it needs a migration that rewrites `runs_by_time`.
pub const SHARDS: i32 = 8;

/// The bucket of queues bounded by open work rather than by time.
pub const OPEN_BUCKET: i32 = 0;

/// The UTC day (days since the Unix epoch) of `at_ms`, the time bucket of every bucketed
/// table. Saturates instead of wrapping for absurd clocks.
pub fn day(at_ms: i64) -> i32 {
    let day = at_ms.div_euclid(DAY_MS);
    i32::try_from(day).unwrap_or(if day < 0 { i32::MIN } else { i32::MAX })
}

/// The shard of a run: the last byte of its id, which is random in both v4 and v7 ids
/// (the first bytes of a v7 id are a clock, so they would put a burst in one shard).
pub fn shard(id: WorkflowId) -> i32 {
    i32::from(id.0.as_bytes()[15]) % SHARDS
}

/// `status_key` / `definition_key` of a listing scope: `''` stands for "any".
pub const ANY: &str = "";

/// The inbox scopes a human task is listed under: everyone, its assignee, its group.
pub fn inbox_scopes(task: &HumanTask) -> Vec<String> {
    let mut scopes = vec![String::new()];
    scopes.extend(task.assignee.as_ref().map(|a| format!("a:{a}")));
    scopes.extend(task.group.as_ref().map(|g| format!("g:{g}")));
    scopes
}

fn is_open(status: TaskStatus) -> bool {
    matches!(status, TaskStatus::Scheduled | TaskStatus::Running)
}

/// The classes a task in `status` is listed under, each with its bucket: `open` tasks
/// (and the `scheduled`/`running` classes) in [`OPEN_BUCKET`], bounded by open work;
/// `any` and the final statuses in the day the task was created, bounded by time.
pub fn inbox_classes(status: TaskStatus, created_at_ms: i64) -> Vec<(&'static str, i32)> {
    let dated = day(created_at_ms);
    let mut classes = vec![("any", dated)];
    if is_open(status) {
        classes.push(("open", OPEN_BUCKET));
        classes.push((status.as_str(), OPEN_BUCKET));
    } else {
        classes.push((status.as_str(), dated));
    }
    classes
}

/// The partition scope and class an inbox query reads. With both an assignee and a group
/// it reads the assignee's scope (the narrower one) and filters the group on the rows.
pub fn inbox_query(filter: &HumanTaskFilter) -> (String, &'static str) {
    let scope = match (&filter.assignee, &filter.group) {
        (Some(a), _) => format!("a:{a}"),
        (None, Some(g)) => format!("g:{g}"),
        (None, None) => String::new(),
    };
    let class = match filter.status {
        None => "any",
        Some(InboxStatus::Open) => "open",
        Some(InboxStatus::Is(s)) => s.as_str(),
    };
    (scope, class)
}

/// Every `human_tasks` key of a task: (scope, class, bucket).
pub fn inbox_keys(task: &HumanTask, created_at_ms: i64) -> Vec<(String, &'static str, i32)> {
    let classes = inbox_classes(task.status, created_at_ms);
    inbox_scopes(task)
        .into_iter()
        .flat_map(|scope| classes.iter().map(move |&(c, b)| (scope.clone(), c, b)))
        .collect()
}

/// Where the next page of a listing starts. Opaque to clients; its text is
/// `t<created_at_ms>_<id>` or `b<day>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// Strictly after this row (older, or as old with a smaller id).
    After {
        /// The row's creation time (ms since the Unix epoch).
        created_at_ms: i64,
        /// The row's run id, in its stored (hyphenated) form.
        id: String,
    },
    /// Every bucket before this day: a page stopped after scanning its share of
    /// (possibly empty) days without filling up.
    BeforeDay(i32),
}

impl Cursor {
    /// The cursor's text, as handed to clients.
    pub fn encode(&self) -> String {
        match self {
            Cursor::After { created_at_ms, id } => format!("t{created_at_ms}_{id}"),
            Cursor::BeforeDay(day) => format!("b{day}"),
        }
    }

    /// Parses a cursor from [`Cursor::encode`]; anything else is [`StoreError::BadCursor`].
    pub fn decode(text: &str) -> Result<Self, StoreError> {
        let bad = || StoreError::BadCursor(text.to_owned());
        if let Some(rest) = text.strip_prefix('t') {
            let (ms, id) = rest.split_once('_').ok_or_else(bad)?;
            let created_at_ms = ms.parse().map_err(|_| bad())?;
            // Re-format the id, so only ids in the stored form are accepted.
            let id = id.parse::<WorkflowId>().map_err(|_| bad())?.to_string();
            Ok(Cursor::After { created_at_ms, id })
        } else if let Some(day) = text.strip_prefix('b') {
            Ok(Cursor::BeforeDay(day.parse().map_err(|_| bad())?))
        } else {
            Err(bad())
        }
    }

    /// The newest day a page from here can contain.
    pub fn top_day(&self) -> i32 {
        match self {
            Cursor::After { created_at_ms, .. } => day(*created_at_ms),
            Cursor::BeforeDay(d) => d.saturating_sub(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn days_are_utc_days_and_never_wrap() {
        assert_eq!(day(0), 0);
        assert_eq!(day(DAY_MS - 1), 0);
        assert_eq!(day(DAY_MS), 1);
        assert_eq!(day(-1), -1, "before the epoch is the day before, not day 0");
        assert_eq!(day(1_700_000_000_000), 19_675);
        assert_eq!(day(i64::MAX), i32::MAX);
        assert_eq!(day(i64::MIN), i32::MIN);
    }

    #[test]
    fn shards_come_from_the_random_end_of_the_id() {
        let id = |last: u8| {
            let mut bytes = [0x42; 16];
            bytes[15] = last;
            WorkflowId(Uuid::from_bytes(bytes))
        };
        assert_eq!(shard(id(0)), 0);
        assert_eq!(shard(id(9)), 1);
        assert_eq!(shard(id(255)), 7);
        assert!(
            (0..=255)
                .map(|b| shard(id(b)))
                .all(|s| (0..SHARDS).contains(&s))
        );
    }

    #[test]
    fn cursors_round_trip() {
        let id = Uuid::new_v4().to_string();
        for cursor in [
            Cursor::After {
                created_at_ms: 1_700_000_000_123,
                id: id.clone(),
            },
            Cursor::After {
                created_at_ms: -5,
                id,
            },
            Cursor::BeforeDay(19_675),
            Cursor::BeforeDay(-3),
        ] {
            assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        }
    }

    #[test]
    fn cursors_not_handed_out_are_rejected() {
        let id = Uuid::new_v4();
        for text in [
            "",
            "not a cursor",
            "t123",
            "t_".to_owned().as_str(),
            &format!("tx_{id}"),
            "t5_not-a-uuid",
            "b",
            "bx",
            &format!("x5_{id}"),
        ] {
            let err = Cursor::decode(text).expect_err(text);
            assert!(matches!(err, StoreError::BadCursor(_)), "{text}: {err:?}");
        }
        // Upper-case ids are normalised to the stored (lower-case) form.
        let upper = format!("t5_{}", id.to_string().to_uppercase());
        assert_eq!(
            Cursor::decode(&upper).unwrap(),
            Cursor::After {
                created_at_ms: 5,
                id: id.to_string()
            }
        );
    }

    #[test]
    fn a_page_from_a_cursor_starts_in_the_right_day() {
        let after = Cursor::After {
            created_at_ms: 3 * DAY_MS + 5,
            id: Uuid::nil().to_string(),
        };
        assert_eq!(after.top_day(), 3);
        assert_eq!(Cursor::BeforeDay(3).top_day(), 2);
        assert_eq!(Cursor::BeforeDay(i32::MIN).top_day(), i32::MIN);
    }

    fn human(status: TaskStatus, assignee: Option<&str>, group: Option<&str>) -> HumanTask {
        let run = WorkflowId(Uuid::nil());
        HumanTask {
            task_id: distorch_domain::TaskId::new(run, 1),
            workflow_id: run,
            definition: "d".into(),
            step_id: "s".into(),
            step_key: "s".into(),
            status,
            title: "t".into(),
            assignee: assignee.map(Into::into),
            group: group.map(Into::into),
            claimed_by: None,
            form: None,
            escalated: false,
            completed_by: None,
            created_at: String::new(),
            due_at: None,
            output: None,
            error: None,
        }
    }

    #[test]
    fn open_tasks_sit_in_the_open_bucket_and_final_ones_in_their_day() {
        let at = 2 * DAY_MS + 1;
        assert_eq!(
            inbox_classes(TaskStatus::Running, at),
            [("any", 2), ("open", 0), ("running", 0)]
        );
        assert_eq!(
            inbox_classes(TaskStatus::Completed, at),
            [("any", 2), ("completed", 2)]
        );
    }

    #[test]
    fn a_task_is_listed_under_every_scope_it_belongs_to() {
        let task = human(TaskStatus::Scheduled, Some("ann"), Some("finance"));
        let keys = inbox_keys(&task, 0);
        assert_eq!(keys.len(), 9, "3 scopes x 3 classes: {keys:?}");
        assert!(keys.contains(&("a:ann".into(), "open", 0)));
        assert!(keys.contains(&("g:finance".into(), "scheduled", 0)));
        assert!(keys.contains(&(String::new(), "any", 0)));
        let unassigned = human(TaskStatus::Cancelled, None, None);
        assert_eq!(
            inbox_keys(&unassigned, 0),
            [(String::new(), "any", 0), (String::new(), "cancelled", 0)]
        );
    }

    #[test]
    fn every_query_reads_a_scope_and_class_its_rows_are_written_under() {
        let task = human(TaskStatus::Running, Some("ann"), Some("finance"));
        let keys = inbox_keys(&task, 0);
        let statuses = [
            None,
            Some(InboxStatus::Open),
            Some(InboxStatus::Is(TaskStatus::Running)),
        ];
        let assignees = [None, Some("ann".to_owned())];
        let groups = [None, Some("finance".to_owned())];
        for status in statuses {
            for assignee in &assignees {
                for group in &groups {
                    let filter = HumanTaskFilter {
                        assignee: assignee.clone(),
                        group: group.clone(),
                        status,
                    };
                    assert!(filter.matches(&task));
                    let (scope, class) = inbox_query(&filter);
                    assert!(
                        keys.iter().any(|(s, c, _)| *s == scope && *c == class),
                        "{filter:?} reads ({scope}, {class})"
                    );
                }
            }
        }
    }
}
