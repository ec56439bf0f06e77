"""Vocabularies for the demo library: titles, names, publishers, subjects and call numbers.

Chinese material is classified with the CLC (中国图书馆分类法), Western material with LC or
Dewey. Every Chinese string here is GBK-encodable, so any of them can be turned into a
``legacy_gbk`` defect.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class ClcClass:
    code: str
    heading: str
    topics: tuple[str, ...]


@dataclass(frozen=True)
class WesternClass:
    lc: str
    ddc: str
    heading: str
    topics: tuple[str, ...]


CLC_CLASSES: tuple[ClcClass, ...] = (
    ClcClass("A81", "马克思主义理论研究", ("马克思主义基本原理", "马克思主义中国化", "唯物史观")),
    ClcClass("B2", "哲学-中国", ("中国哲学史", "先秦儒家思想", "宋明理学", "道家哲学")),
    ClcClass("B5", "哲学-欧洲", ("西方哲学", "现象学", "德国古典哲学")),
    ClcClass("B84", "心理学", ("普通心理学", "心理学研究方法", "实验心理学")),
    ClcClass("B842", "认知心理学", ("认知心理学", "记忆与学习", "注意与意识")),
    ClcClass("B844", "发展心理学", ("发展心理学", "儿童心理发展", "青少年心理")),
    ClcClass("B849", "应用心理学", ("心理健康教育", "心理咨询", "积极心理学")),
    ClcClass("C91", "社会学", ("社会学概论", "城市社会学", "家庭社会学")),
    ClcClass("D6", "中国政治", ("中国政治制度", "基层治理", "公共政策")),
    ClcClass("F12", "中国经济", ("中国经济发展", "区域经济", "乡村振兴")),
    ClcClass("G25", "图书馆学", ("图书馆学基础", "信息资源建设", "数字图书馆")),
    ClcClass("G40", "教育学", ("教育学原理", "教育哲学", "教育研究方法", "比较教育")),
    ClcClass("G42", "教学理论", ("课程与教学论", "教学设计", "课堂教学评价")),
    ClcClass("G44", "教育心理学", ("教育心理学", "学习动机", "学习科学")),
    ClcClass("G451", "教师与学生", ("教师专业发展", "教师教育", "班主任工作")),
    ClcClass("G52", "中国教育事业", ("中国教育史", "教育改革", "教育政策")),
    ClcClass("G61", "学前教育", ("学前教育学", "幼儿园课程", "儿童游戏")),
    ClcClass("G62", "初等教育", ("小学教育", "小学语文教学", "小学数学教学")),
    ClcClass("G63", "中等教育", ("中学教育", "中学语文教学", "中学数学教学")),
    ClcClass("G64", "高等教育", ("高等教育学", "大学治理", "研究生教育")),
    ClcClass("G76", "特殊教育", ("特殊教育", "融合教育", "孤独症儿童教育")),
    ClcClass("G8", "体育", ("体育教学", "运动训练学", "学校体育")),
    ClcClass("H1", "汉语", ("现代汉语", "古代汉语", "汉语语法", "对外汉语教学")),
    ClcClass("H31", "英语", ("英语教学", "英语语言学", "英汉翻译")),
    ClcClass("I206", "中国文学史", ("中国文学史", "中国现代文学", "中国当代文学")),
    ClcClass("I207.22", "古典诗歌研究", ("唐诗研究", "宋词研究", "诗经研究")),
    ClcClass("I247.5", "中国当代小说", ("长篇小说", "城市小说", "乡土小说")),
    ClcClass("I266", "中国当代散文", ("散文选", "随笔集", "书信集")),
    ClcClass("J2", "绘画", ("中国画技法", "书法艺术", "西方美术史")),
    ClcClass("J6", "音乐", ("音乐教育", "中国民族音乐", "钢琴教程")),
    ClcClass("K20", "中国历史", ("中国通史", "中国古代史", "中国近代史")),
    ClcClass("K9", "地理", ("中国地理", "人文地理学", "地图学")),
    ClcClass("O1", "数学", ("高等数学", "数学分析", "高等代数", "概率论与数理统计")),
    ClcClass("O4", "物理学", ("普通物理学", "量子力学", "热力学与统计物理")),
    ClcClass("O6", "化学", ("无机化学", "有机化学", "物理化学")),
    ClcClass("P7", "海洋学", ("海洋科学导论", "海洋环境")),
    ClcClass("Q", "生物科学", ("普通生物学", "细胞生物学", "遗传学")),
    ClcClass("TP18", "人工智能", ("人工智能", "机器学习", "教育人工智能")),
    ClcClass("TP3", "计算机技术", ("计算机基础", "程序设计", "数据库原理")),
    ClcClass("X", "环境科学", ("环境科学概论", "生态文明", "环境教育")),
)

WESTERN_CLASSES: tuple[WesternClass, ...] = (
    WesternClass(
        "LB1051",
        "370.15",
        "Educational psychology",
        ("Educational Psychology", "Motivation in Education", "Learning and Teaching"),
    ),
    WesternClass(
        "LB1025.3", "371.102", "Teaching", ("Effective Teaching", "Classroom Management", "Pedagogy")
    ),
    WesternClass(
        "LB1060",
        "370.1523",
        "Learning, Psychology of",
        ("The Science of Learning", "Learning Sciences", "How People Learn"),
    ),
    WesternClass(
        "LB1139.25",
        "372.21",
        "Early childhood education",
        ("Early Childhood Education", "Play and Learning", "Preschool Curriculum"),
    ),
    WesternClass(
        "LB2331", "378.125", "College teaching", ("Teaching in Higher Education", "The University Classroom")
    ),
    WesternClass(
        "LC191",
        "306.43",
        "Educational sociology",
        ("Sociology of Education", "Schooling and Inequality", "Education and Society"),
    ),
    WesternClass(
        "LA1131",
        "370.951",
        "Education -- China",
        ("Education in China", "Chinese Schooling", "Educational Reform in China"),
    ),
    WesternClass(
        "LC1200", "371.9046", "Inclusive education", ("Inclusive Education", "Special Needs and Schools")
    ),
    WesternClass(
        "BF311", "153", "Cognition", ("Cognitive Psychology", "Memory", "Attention and Consciousness")
    ),
    WesternClass(
        "BF721", "155.4", "Child psychology", ("Child Development", "The Developing Child", "Adolescence")
    ),
    WesternClass(
        "BF204.6", "150.1988", "Positive psychology", ("Positive Psychology", "Well-Being", "Resilience")
    ),
    WesternClass(
        "BF76.5",
        "150.72",
        "Psychology -- Research",
        ("Research Methods in Psychology", "Experimental Design"),
    ),
    WesternClass("HM1033", "302", "Social psychology", ("Social Psychology", "Group Processes", "Attitudes")),
    WesternClass(
        "P118",
        "401.93",
        "Language acquisition",
        ("Second Language Acquisition", "Bilingualism", "Language Development"),
    ),
    WesternClass(
        "PE1128",
        "428.24",
        "English language -- Study and teaching",
        ("Teaching English as a Foreign Language", "English for Academic Purposes"),
    ),
    WesternClass(
        "PL2265",
        "895.109",
        "Chinese literature -- History and criticism",
        ("Chinese Literature", "Classical Chinese Poetry", "Modern Chinese Fiction"),
    ),
    WesternClass(
        "DS735", "951", "China -- History", ("A History of China", "Late Imperial China", "Modern China")
    ),
    WesternClass(
        "QA300", "515", "Mathematical analysis", ("Real Analysis", "Calculus", "Functional Analysis")
    ),
    WesternClass("QA76.9", "004", "Computer science", ("Computer Science", "Algorithms", "Data Structures")),
    WesternClass(
        "Q325.5", "006.31", "Machine learning", ("Machine Learning", "Deep Learning", "Pattern Recognition")
    ),
    WesternClass(
        "Z665", "020", "Library science", ("Library Science", "Information Organization", "Digital Libraries")
    ),
    WesternClass(
        "GE70", "363.70071", "Environmental education", ("Environmental Education", "Sustainability")
    ),
)

CHINESE_SERIALS: tuple[str, ...] = (
    "教育研究",
    "心理学报",
    "北京师范大学学报（社会科学版）",
    "中国教育学刊",
    "课程·教材·教法",
    "文学评论",
    "历史研究",
    "数学学报",
    "物理学报",
    "中国社会科学",
    "心理发展与教育",
    "比较教育研究",
    "教师教育研究",
    "学前教育研究",
    "中国特殊教育",
    "电化教育研究",
    "语言教学与研究",
    "中国图书馆学报",
    "心理科学",
    "教育学报",
    "高等教育研究",
    "中国电化教育",
    "外国文学评论",
    "哲学研究",
)
WESTERN_SERIALS: tuple[str, ...] = (
    "Journal of Educational Psychology",
    "Child Development",
    "American Educational Research Journal",
    "Review of Educational Research",
    "Psychological Science",
    "Developmental Psychology",
    "Comparative Education Review",
    "Learning and Instruction",
    "Cognition",
    "Journal of Chinese Linguistics",
    "Teaching and Teacher Education",
    "Educational Researcher",
    "Journal of Memory and Language",
    "The China Quarterly",
    "Computers & Education",
    "Early Childhood Research Quarterly",
)
SERIAL_FREQUENCIES = (("月刊", "Monthly"), ("双月刊", "Bimonthly"), ("季刊", "Quarterly"))

ZH_PREFIXES = ("", "", "", "现代", "当代", "新编", "中国", "西方", "基础", "实用")
ZH_SUFFIXES = ("", "研究", "导论", "概论", "教程", "新论", "论集", "史", "十讲", "原理", "手册", "通论")
ZH_SUBTITLES = (
    "理论与实践",
    "历史与现状",
    "问题与对策",
    "以北京市为例",
    "基于实证研究的视角",
    "国际比较的视野",
    "第二版",
    "经典案例分析",
    "跨学科的视角",
    "新时代的探索",
)
ZH_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕"
    "丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦方白邹孟熊秦邱江尹薛段雷侯龙史陶黎贺顾毛郝龚邵万钱严武戴孔汤"
)
ZH_GIVEN = (
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂英华玉萍红玲建国文晓海波辉鹏宇浩凯斌欣怡佳琪子涵"
    "思雨梓萱一诺欣然嘉怡晨阳志远德新春梅秀云立东丹丽君慧颖雪松林峰振宁安宏博健翔瑞琳婷倩蕾"
)
ZH_ROLES = ("著", "著", "著", "主编", "编著", "译")
ZH_PUBLISHERS: tuple[tuple[str, str], ...] = (
    ("北京", "北京师范大学出版社"),
    ("北京", "人民教育出版社"),
    ("北京", "高等教育出版社"),
    ("北京", "商务印书馆"),
    ("北京", "中华书局"),
    ("北京", "人民出版社"),
    ("北京", "科学出版社"),
    ("北京", "北京大学出版社"),
    ("上海", "华东师范大学出版社"),
    ("上海", "上海古籍出版社"),
    ("北京", "生活·读书·新知三联书店"),
    ("北京", "中国社会科学出版社"),
    ("北京", "教育科学出版社"),
    ("北京", "清华大学出版社"),
    ("上海", "上海教育出版社"),
    ("南京", "江苏教育出版社"),
    ("杭州", "浙江大学出版社"),
    ("广州", "广东高等教育出版社"),
    ("长沙", "湖南教育出版社"),
    ("北京", "外语教学与研究出版社"),
)
ZH_UNIVERSITY = "北京师范大学"
ZH_DEGREES = ("硕士学位论文", "博士学位论文")

WESTERN_SURNAMES = (
    "Smith",
    "Johnson",
    "Brown",
    "Miller",
    "Davis",
    "Wilson",
    "Anderson",
    "Taylor",
    "Thomas",
    "Moore",
    "Martin",
    "Jackson",
    "White",
    "Harris",
    "Clark",
    "Lewis",
    "Walker",
    "Hall",
    "Young",
    "King",
    "Wright",
    "Green",
    "Baker",
    "Adams",
    "Nelson",
    "Carter",
    "Mitchell",
    "Roberts",
    "Turner",
    "Phillips",
    "Campbell",
    "Parker",
    "Evans",
    "Edwards",
    "Collins",
    "Stewart",
    "Morris",
    "Murphy",
    "Cook",
    "Rogers",
    "Müller",
    "Schmidt",
    "Dubois",
    "Lefèvre",
    "García",
    "Hernández",
    "Rossi",
    "Nakamura",
    "Kim",
    "Zhang",
    "Li",
)
WESTERN_GIVEN = (
    "James",
    "Mary",
    "John",
    "Patricia",
    "Robert",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Susan",
    "Richard",
    "Jessica",
    "Joseph",
    "Sarah",
    "Thomas",
    "Karen",
    "Daniel",
    "Nancy",
    "Anna",
    "Peter",
    "Hans",
    "Claire",
    "José",
    "Marco",
    "Yuki",
    "Min-jun",
    "Wei",
    "Xiaoming",
)
WESTERN_PATTERNS = (
    "{t}",
    "{t}",
    "Introduction to {t}",
    "Handbook of {t}",
    "Foundations of {t}",
    "{t} in China",
    "Rethinking {t}",
    "Perspectives on {t}",
    "{t}: Theory and Practice",
    "{t}: A Critical Introduction",
    "The Oxford Handbook of {t}",
    "Advances in {t}",
    "{t} and Society",
    "Understanding {t}",
)
WESTERN_PUBLISHERS: tuple[tuple[str, str, str], ...] = (
    ("London", "Routledge", "enk"),
    ("New York", "Routledge", "nyu"),
    ("Cham", "Springer", "sz"),
    ("Oxford", "Oxford University Press", "enk"),
    ("Cambridge", "Cambridge University Press", "enk"),
    ("Hoboken, NJ", "Wiley", "nju"),
    ("Thousand Oaks, CA", "SAGE", "cau"),
    ("Boston", "Pearson", "mau"),
    ("Amsterdam", "Elsevier", "ne"),
    ("Cambridge, Mass.", "Harvard University Press", "mau"),
    ("Cambridge, MA", "MIT Press", "mau"),
    ("New York", "Guilford Press", "nyu"),
    ("Singapore", "Springer Nature", "si"),
    ("Berlin", "De Gruyter", "gw"),
)
WESTERN_SUBDIVISIONS = ("Research", "Study and teaching", "China", "History", "Case studies", "Congresses")


def chinese_name(rng: random.Random) -> str:
    given = rng.choice(ZH_GIVEN) + (rng.choice(ZH_GIVEN) if rng.random() < 0.7 else "")
    return rng.choice(ZH_SURNAMES) + given


def western_name_parts(rng: random.Random) -> tuple[str, str]:
    """(surname, given name)."""
    return rng.choice(WESTERN_SURNAMES), rng.choice(WESTERN_GIVEN)


def western_name(rng: random.Random) -> str:
    """Inverted, as headings and Aleph patron names have it: ``Surname, Given``."""
    surname, given = western_name_parts(rng)
    return f"{surname}, {given}"


def chinese_title(rng: random.Random, cls: ClcClass) -> tuple[str, str]:
    """(title proper, other title information — may be empty)."""
    title = rng.choice(ZH_PREFIXES) + rng.choice(cls.topics) + rng.choice(ZH_SUFFIXES)
    subtitle = rng.choice(ZH_SUBTITLES) if rng.random() < 0.3 else ""
    return title, subtitle


def western_title(rng: random.Random, cls: WesternClass) -> tuple[str, str]:
    pattern = rng.choice(WESTERN_PATTERNS)
    title = pattern.format(t=rng.choice(cls.topics))
    if ": " in title:
        title, subtitle = title.split(": ", 1)
        return title, subtitle
    return title, ""


def isbn13(prefix: str, number: int) -> str:
    """A valid ISBN-13: ``prefix`` (e.g. ``9787303``) + zero-padded number + check digit."""
    digits = 12 - len(prefix)
    body = f"{prefix}{number % 10**digits:0{digits}d}"
    total = sum((1 if i % 2 == 0 else 3) * int(d) for i, d in enumerate(body))
    return body + str((10 - total % 10) % 10)


def issn(number: int) -> str:
    body = f"{number % 10_000_000:07d}"
    total = sum((8 - i) * int(d) for i, d in enumerate(body))
    check = (11 - total % 11) % 11
    digits = body + ("X" if check == 10 else str(check))
    return f"{digits[:4]}-{digits[4:]}"


def call_number(chinese: bool, class_idx: int, cutter: int, dewey: bool, year: int) -> tuple[str, str, str]:
    """(Z30_CALL_NO_TYPE / 852 first indicator, class part $h, item part $i).

    The same bib always gets the same call number, so its 852 and its items agree.
    """
    if chinese:
        return "8", CLC_CLASSES[class_idx].code, str(cutter)
    cls = WESTERN_CLASSES[class_idx]
    letter = chr(ord("A") + cutter % 26)
    if dewey:
        return "1", cls.ddc, f"{letter}{cutter % 1000}"
    return "0", cls.lc, f".{letter}{cutter % 1000} {year}"


def full_call_number(kind: str, h: str, i: str) -> str:
    return f"{h}/{i}" if kind == "8" else f"{h} {i}"
