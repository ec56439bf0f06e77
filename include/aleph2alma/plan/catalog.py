"""What every migration has: its phases, the key nodes between them and the approval gates that
close them. Each label is in English and Simplified Chinese (``Text``).

Phases follow the Ex Libris implementation stages the published Aleph → Alma case studies
describe (Beijing Normal University's among them): extraction and analysis, the test load, fix
cycles, cutover, post-go-live. A key node is reached when a gate is answered Approve, or when a
gate *opens* (the step before it is done: the test-load delivery opens "Test environment
loaded?"), or by a step of its own (the go / no-go decision).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from aleph2alma.runs import CUTOVER_DAG, EXTRACT_DAG, FIX_CYCLE_DAG, POST_GO_LIVE_DAG, TEST_LOAD_DAG


@dataclass(frozen=True)
class Text:
    en: str
    zh: str

    def __call__(self, lang: str) -> str:
        return self.zh if lang == "zh" else self.en


class Phase(StrEnum):
    EXTRACTION_AND_ANALYSIS = "extraction_and_analysis"
    TEST_LOAD = "test_load"
    FIX_CYCLES = "fix_cycles"
    CUTOVER = "cutover"
    POST_GO_LIVE = "post_go_live"


class KeyNode(StrEnum):
    MIGRATION_FORM_DUE = "migration_form_due"
    TEST_LOAD_DELIVERED = "test_load_delivered"
    TEST_ENVIRONMENT_RECEIVED = "test_environment_received"
    FIX_CYCLE_SIGN_OFF = "fix_cycle_sign_off"
    TECHNICAL_SERVICES_FREEZE = "technical_services_freeze"
    CUTOVER_DELIVERY = "cutover_delivery"
    CUTOVER_ENVIRONMENT_ACCEPTED = "cutover_environment_accepted"
    FULFILLMENT_FREEZE = "fulfillment_freeze"
    GO_LIVE = "go_live"
    ALEPH_DECOMMISSIONED = "aleph_decommissioned"


@dataclass(frozen=True)
class PhaseSpec:
    phase: Phase
    label: Text
    dag_id: str
    """The DAG whose runs make up the phase (a standalone extract is extraction and analysis)."""
    closed_by: KeyNode
    """The key node that ends the phase: its actual end."""


@dataclass(frozen=True)
class KeyNodeSpec:
    node: KeyNode
    label: Text
    phase: Phase
    latest: bool = False
    """Reached again and again (each fix-cycle sign-off): the latest counts, not the first."""


@dataclass(frozen=True)
class GateSpec:
    dag_id: str
    task_id: str
    label: Text
    closes: KeyNode
    """The key node an Approve closes (named in the gate's body with its planned date)."""
    reached_on_open: tuple[KeyNode, ...] = field(default=())
    """Key nodes reached when the gate opens: the work before it is done."""
    recorded_by_gate: bool = True
    """False when a later step records ``closes`` (go-live: the decision, not the Approve)."""

    @property
    def gate_id(self) -> str:
        return f"{self.dag_id}.{self.task_id}"


PHASES: tuple[PhaseSpec, ...] = (
    PhaseSpec(
        Phase.EXTRACTION_AND_ANALYSIS,
        Text("Extraction and analysis", "数据抽取与分析"),
        EXTRACT_DAG,
        KeyNode.MIGRATION_FORM_DUE,
    ),
    PhaseSpec(
        Phase.TEST_LOAD, Text("Test load", "测试加载"), TEST_LOAD_DAG, KeyNode.TEST_ENVIRONMENT_RECEIVED
    ),
    PhaseSpec(
        Phase.FIX_CYCLES, Text("Fix cycles", "问题修正迭代"), FIX_CYCLE_DAG, KeyNode.FIX_CYCLE_SIGN_OFF
    ),
    PhaseSpec(Phase.CUTOVER, Text("Cutover", "正式切换"), CUTOVER_DAG, KeyNode.GO_LIVE),
    PhaseSpec(
        Phase.POST_GO_LIVE, Text("Post-go-live", "上线后工作"), POST_GO_LIVE_DAG, KeyNode.ALEPH_DECOMMISSIONED
    ),
)

KEY_NODES: tuple[KeyNodeSpec, ...] = (
    KeyNodeSpec(
        KeyNode.MIGRATION_FORM_DUE, Text("Migration form due", "迁移表单提交"), Phase.EXTRACTION_AND_ANALYSIS
    ),
    KeyNodeSpec(
        KeyNode.TEST_LOAD_DELIVERED, Text("Test-load data delivered", "测试数据交付"), Phase.TEST_LOAD
    ),
    KeyNodeSpec(
        KeyNode.TEST_ENVIRONMENT_RECEIVED, Text("Test environment received", "测试环境交付"), Phase.TEST_LOAD
    ),
    KeyNodeSpec(
        KeyNode.FIX_CYCLE_SIGN_OFF,
        Text("Fix-cycle sign-off", "修正迭代签字确认"),
        Phase.FIX_CYCLES,
        latest=True,
    ),
    KeyNodeSpec(
        KeyNode.TECHNICAL_SERVICES_FREEZE, Text("Technical-services freeze", "技术服务冻结"), Phase.CUTOVER
    ),
    KeyNodeSpec(KeyNode.CUTOVER_DELIVERY, Text("Cutover delivery", "切换数据交付"), Phase.CUTOVER),
    KeyNodeSpec(
        KeyNode.CUTOVER_ENVIRONMENT_ACCEPTED,
        Text("Cutover environment accepted", "切换环境验收"),
        Phase.CUTOVER,
    ),
    KeyNodeSpec(KeyNode.FULFILLMENT_FREEZE, Text("Fulfillment freeze", "流通冻结"), Phase.CUTOVER),
    KeyNodeSpec(KeyNode.GO_LIVE, Text("Go-live", "正式上线"), Phase.CUTOVER),
    KeyNodeSpec(KeyNode.ALEPH_DECOMMISSIONED, Text("Aleph decommissioned", "Aleph 停用"), Phase.POST_GO_LIVE),
)

GATES: tuple[GateSpec, ...] = (
    GateSpec(
        TEST_LOAD_DAG,
        "test_environment_loaded",
        Text("Test environment loaded?", "测试环境已加载？"),
        KeyNode.TEST_ENVIRONMENT_RECEIVED,
        reached_on_open=(KeyNode.MIGRATION_FORM_DUE, KeyNode.TEST_LOAD_DELIVERED),
    ),
    GateSpec(
        FIX_CYCLE_DAG,
        "sign_off",
        Text("Sign off the iteration?", "签字确认本轮迭代？"),
        KeyNode.FIX_CYCLE_SIGN_OFF,
    ),
    GateSpec(
        CUTOVER_DAG,
        "technical_services_freeze",
        Text("Technical-services freeze in effect?", "技术服务冻结已生效？"),
        KeyNode.TECHNICAL_SERVICES_FREEZE,
    ),
    GateSpec(
        CUTOVER_DAG,
        "cutover_environment_accepted",
        Text("Cutover environment accepted?", "切换环境验收通过？"),
        KeyNode.CUTOVER_ENVIRONMENT_ACCEPTED,
        reached_on_open=(KeyNode.CUTOVER_DELIVERY,),
    ),
    GateSpec(
        CUTOVER_DAG,
        "fulfillment_freeze",
        Text("Fulfillment freeze in effect?", "流通冻结已生效？"),
        KeyNode.FULFILLMENT_FREEZE,
    ),
    GateSpec(
        CUTOVER_DAG, "go_no_go", Text("Go live?", "是否上线？"), KeyNode.GO_LIVE, recorded_by_gate=False
    ),
    GateSpec(
        POST_GO_LIVE_DAG,
        "decommission",
        Text("Aleph can be decommissioned?", "Aleph 可以停用？"),
        KeyNode.ALEPH_DECOMMISSIONED,
    ),
)

ROLE_TITLES: dict[str, Text] = {
    "project_lead": Text("Project lead", "项目负责人"),
    "systems_librarian": Text("Systems librarian", "系统馆员"),
    "cataloguing": Text("Cataloguing", "编目"),
    "circulation": Text("Circulation", "流通"),
    "e_resources": Text("E-resources", "电子资源"),
    "acquisitions": Text("Acquisitions", "采访"),
}
"""Titles of the usual roles; a plan may name others (and give their titles)."""


def node_spec(node: KeyNode | str) -> KeyNodeSpec:
    return next(n for n in KEY_NODES if n.node == node)


def gate_spec(dag_id: str, task_id: str) -> GateSpec | None:
    """The catalogued gate ``dag_id.task_id``; None for a gate this product does not know."""
    return next((g for g in GATES if g.dag_id == dag_id and g.task_id == task_id), None)


def gate_ids() -> list[str]:
    return [g.gate_id for g in GATES]
