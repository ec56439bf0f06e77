"""The control room's words in English and Simplified Chinese (the demo library's staff read Chinese)."""

from __future__ import annotations

from aleph2alma.plan.catalog import Text

LANGUAGES = ("en", "zh")

LABELS: dict[str, Text] = {
    "control_room": Text("Migration control room", "迁移控制台"),
    "status_report": Text("Migration status", "迁移状态报告"),
    "as_of": Text("As of", "截至"),
    "phases": Text("Phases", "实施阶段"),
    "phase": Text("Phase", "阶段"),
    "planned": Text("Planned", "计划"),
    "actual": Text("Actual", "实际"),
    "latest_run": Text("Latest run", "最近运行"),
    "runs": Text("Runs", "运行次数"),
    "state": Text("State", "状态"),
    "slip": Text("Slip (days)", "延误（天）"),
    "key_nodes": Text("Key nodes", "关键节点"),
    "key_node": Text("Key node", "关键节点"),
    "answered_by": Text("Answered by", "审批人"),
    "outcome": Text("Outcome", "结果"),
    "open_gates": Text("Approval gates waiting for an answer", "待审批事项"),
    "no_open_gates": Text("No gate is waiting for an answer.", "目前没有待审批事项。"),
    "gate": Text("Gate", "审批"),
    "run": Text("Run", "运行"),
    "assigned": Text("Assigned to", "审批人员"),
    "role": Text("Role", "角色"),
    "since": Text("Open since", "开始等待"),
    "answer": Text("Answer", "去审批"),
    "counts": Text(
        "Records: Aleph → delivered → rejected → in Alma", "记录数：Aleph → 已交付 → 已拒绝 → Alma 中"
    ),
    "counts_of": Text("From run", "来自运行"),
    "no_counts": Text("No reconciled test load or cutover yet.", "尚无已对账的测试加载或正式切换。"),
    "entity": Text("Entity", "实体"),
    "source": Text("Aleph source", "Aleph 源数据"),
    "delivered": Text("Delivered", "已交付"),
    "rejected": Text("Rejected", "已拒绝"),
    "in_alma": Text("In Alma", "Alma 中"),
    "fix_trend": Text(
        "FIX / REVIEW issues per rule across fix-cycle iterations",
        "各修正迭代中每条规则的 FIX / REVIEW 问题数",
    ),
    "no_fix_cycles": Text("No fix-cycle iteration yet.", "尚无修正迭代。"),
    "iteration": Text("Iteration", "迭代"),
    "issues": Text("Issues", "问题数"),
    "nightly": Text("Nightly delta: records changed per night", "每日增量：每晚变更记录数"),
    "no_nights": Text("No nightly delta committed yet.", "尚无已提交的每日增量。"),
    "night_failures": Text("Failed nights", "失败的夜间运行"),
    "records": Text("Records", "记录数"),
    "timeline": Text("Timeline: planned against actual", "时间线：计划与实际"),
    "today": Text("Today", "今天"),
    "effort": Text("Effort by role", "各角色工作量"),
    "gates_answered": Text("Gates answered", "已审批事项"),
    "issues_fixed": Text("Issues fixed", "已修正问题"),
    "no_plan": Text(
        "This migration has no plan.yaml: add one to see the timeline and the gate owners.",
        "此迁移没有 plan.yaml：添加后可查看时间线与审批角色。",
    ),
    "slipped": Text("Slipped key nodes (days)", "延误的关键节点（天）"),
    "none": Text("none", "无"),
    "language": Text("中文", "English"),
    "migration": Text("Migration", "迁移项目"),
    "done": Text("done", "已完成"),
    "late": Text("late", "已延误完成"),
    "overdue": Text("overdue", "已逾期"),
    "open": Text("open", "未到期"),
    "in_progress": Text("in progress", "进行中"),
    "not_started": Text("not started", "未开始"),
    "report_note": Text(
        "Written by the run named below from what the migration's runs recorded in S3.",
        "由下列运行根据各次运行记录在 S3 中的数据生成。",
    ),
}


def t(key: str, lang: str) -> str:
    return LABELS[key](lang)


def lang_of(value: str | None) -> str:
    """``zh`` for Chinese (``zh``, ``zh-CN``, ``zh_Hans``), else ``en``."""
    return "zh" if (value or "").lower().startswith("zh") else "en"
