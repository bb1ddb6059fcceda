//! `dlq stats`: the selected dead letters counted by failure group, largest first, with the reasons,
//! the oldest and newest, the most replays, and — when a group spans several — the contracts its
//! bodies name (one contract's 403s are fixed in one place; a group over three contracts is three
//! conversations).

use super::filter::Filter;
use super::group::{Group, Member, Stats};
use super::output::Output;
use super::record::{Described, describe};
use super::table::{Column, Row, Table, output_width, short_time};
use super::walk::{Selection, Walk};
use super::{DlqError, connect, disconnect, matching};
use crate::config::AmqpArgs;
use clap::Args;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use tokio_util::sync::CancellationToken;

#[derive(Args, Debug)]
pub(crate) struct StatsArgs {
    #[command(flatten)]
    pub(crate) amqp: AmqpArgs,
    /// One JSON object per group per line.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) filter: Filter,
}

/// A line of `stats --json`, fields in this order.
#[derive(Serialize)]
struct GroupRecord<'a> {
    group: &'a str,
    count: u64,
    status: Option<i64>,
    reasons: &'a BTreeSet<String>,
    message: &'a str,
    oldest: Option<&'a str>,
    newest: Option<&'a str>,
    /// The most times one of its dead letters was replayed before.
    replays: i64,
    /// Dead letters per contract named in the bodies (at most 16 contracts).
    contracts: &'a BTreeMap<String, u64>,
    /// Dead letters naming a contract beyond those.
    other_contracts: u64,
}

pub(crate) async fn stats(args: StatsArgs, shutdown: CancellationToken) -> Result<(), DlqError> {
    let queue = &args.amqp.dead_letter_queue;
    let connection = connect(&args.amqp, "stats").await?;
    let selection = Selection::new(&args.filter, None);
    let mut walk = Walk::start(&connection, &args.amqp, selection, &shutdown, false).await?;
    let mut stats = Stats::default();
    while let Some(letter) = walk.next().await? {
        count(&mut stats, letter.position, &describe(&letter));
    }
    let walked = walk.finish().await?;
    disconnect(connection, "counted").await;
    walked.completed(|_| {
        format!(
            "counted {} dead letter(s); '{queue}' is unchanged",
            stats.total()
        )
    })?;
    let total = stats.total();
    let groups = stats.into_groups();
    let mut output = Output::stdout();
    if args.json {
        for group in &groups {
            if !output.line(&group_json(group))? {
                break;
            }
        }
    } else {
        output.lines(&stats_table(&groups))?;
    }
    output.flush()?;
    eprintln!(
        "{total} dead letter(s){} in {} group(s) in '{queue}'. Replay a group with: job-closer dlq replay --group GROUP",
        matching(&args.filter),
        groups.len()
    );
    Ok(())
}

/// Counts one dead letter (at `position` in the queue) into its group.
pub(crate) fn count(stats: &mut Stats, position: u64, described: &Described) {
    let member = Member {
        reason: described.recorded.reason.as_deref(),
        dead_lettered_at: described.dead_lettered_at.as_deref(),
        position,
        replays: described.recorded.replay_count.unwrap_or(0),
        contract: described.contract.as_deref(),
    };
    stats.add(described.group.clone(), member);
}

/// A line of `stats --json`: one group, fields in [`GroupRecord`]'s order.
pub(crate) fn group_json(group: &Group) -> String {
    let record = GroupRecord {
        group: &group.id,
        count: group.count,
        status: group.key.status,
        reasons: &group.reasons,
        message: &group.key.message,
        oldest: group.oldest.as_deref(),
        newest: group.newest.as_deref(),
        replays: group.max_replays,
        contracts: &group.contracts,
        other_contracts: group.other_contracts,
    };
    // Serialising plain values into a string cannot fail.
    serde_json::to_string(&record).unwrap_or_default()
}

/// The table, with a line under each group that touches several contracts.
fn stats_table(groups: &[Group]) -> Vec<String> {
    let rows: Vec<Row> = groups.iter().map(group_row).collect();
    let table = Table::new(
        vec![
            Column::new("GROUP", 8, 8),
            Column::new("COUNT", 12, 5).right(),
            Column::new("STATUS", 6, 6).right(),
            Column::new("REASON", 30, 10),
            Column::new("REPLAYS", 7, 7).right(),
            Column::new("OLDEST (UTC)", 23, 19),
            Column::new("NEWEST (UTC)", 23, 19),
        ],
        "MESSAGE (variable parts folded)",
        &rows,
        output_width(),
    );
    let mut lines = vec![table.header()];
    for (group, (cells, message)) in groups.iter().zip(&rows) {
        lines.push(table.row(cells, message));
        if let Some(contracts) = contracts_line(group) {
            lines.push(contracts);
        }
    }
    lines
}

fn group_row(group: &Group) -> Row {
    let dash = || "-".to_owned();
    let reasons = group.reasons.iter().cloned().collect::<Vec<_>>().join(",");
    (
        vec![
            group.id.clone(),
            group.count.to_string(),
            group.key.status.map_or_else(dash, |s| s.to_string()),
            if reasons.is_empty() { dash() } else { reasons },
            group.max_replays.to_string(),
            group.oldest.as_deref().map_or_else(dash, short_time),
            group.newest.as_deref().map_or_else(dash, short_time),
        ],
        group.key.message.clone(),
    )
}

/// `          contracts: urn:li:contract:7 (2), urn:li:contract:9 (1)` when there are several.
fn contracts_line(group: &Group) -> Option<String> {
    if group.contracts.len() + usize::from(group.other_contracts > 0) < 2 {
        return None;
    }
    let mut parts: Vec<String> = group
        .contracts
        .iter()
        .map(|(urn, count)| format!("{urn} ({count})"))
        .collect();
    if group.other_contracts > 0 {
        parts.push(format!("others ({})", group.other_contracts));
    }
    Some(format!("          contracts: {}", parts.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlq::group::GroupKey;

    #[test]
    fn groups_over_several_contracts_name_them() {
        let mut stats = Stats::default();
        let key = GroupKey::new(422, "ERROR :: /title :: field is required");
        for (position, contract) in [
            Some("urn:li:contract:7"),
            Some("urn:li:contract:9"),
            Some("urn:li:contract:7"),
            None,
        ]
        .into_iter()
        .enumerate()
        {
            let member = Member {
                position: position as u64,
                contract,
                replays: position as i64,
                ..Member::default()
            };
            stats.add(key.clone(), member);
        }
        let one = GroupKey::new(403, "one contract");
        stats.add(
            one,
            Member {
                contract: Some("urn:li:contract:7"),
                ..Member::default()
            },
        );
        let groups = stats.into_groups();
        let lines = stats_table(&groups);
        assert!(lines[0].contains("REPLAYS"), "{}", lines[0]);
        assert!(
            lines[1].contains(&groups[0].id) && lines[1].contains(" 3 "),
            "{}",
            lines[1]
        );
        assert_eq!(
            lines[2],
            "          contracts: urn:li:contract:7 (2), urn:li:contract:9 (1)"
        );
        assert!(lines[3].contains(&groups[1].id));
        assert_eq!(
            lines.len(),
            4,
            "a group on one contract needs no line: {lines:#?}"
        );
        let json: serde_json::Value = serde_json::from_str(&group_json(&groups[0])).unwrap();
        assert_eq!(json["replays"], 3);
        assert_eq!(json["contracts"]["urn:li:contract:7"], 2);
    }
}
