"""What ``reana.yaml`` may hold, as ``reana-client`` 0.9.6 defines it: the key tables the
validator in ``vre.workflows.spec`` walks (kinds, known keys per section, REANA's options
and HTCondor flavours)."""

from __future__ import annotations

import re


def _keys(table: str) -> dict[str, str]:
    """``"a=str b=bool"`` -> ``{"a": "str", "b": "bool"}``: compact key tables."""
    return dict(item.split("=") for item in table.split())


WORKFLOW_TYPES = ("serial", "cwl", "snakemake", "yadage")
COMPUTE_BACKENDS = ("kubernetes", "htcondorcern", "slurmcern", "compute4punch")
#: HTCondor job flavour -> its maximum runtime in seconds (``htcondor_max_runtime``)
HTCONDOR_FLAVOURS = {
    flavour: int(seconds)
    for flavour, seconds in _keys(
        "espresso=1200 microcentury=3600 longlunch=7200 workday=28800 tomorrow=86400 "
        "testmatch=259200 nextweek=604800"
    ).items()
}
#: operational option -> the workflow types that accept it (REANA's table)
OPTIONS = _keys(
    "CACHE=serial FROM=serial TARGET=serial,cwl report=snakemake toplevel=yadage "
    "initdir=yadage initfiles=yadage accept_metadir=yadage"
)
DANGEROUS = ("sudo ", "cd /")
# Known keys per section -> kind. An unknown key is a warning (reana-client: "Unexpected
# properties"), a known key of the wrong kind an error.
TOP = _keys("version=str inputs=map workflow=map outputs=map tests=map workspace=map")
SECTIONS = {
    "inputs": _keys("files=strs directories=strs parameters=map options=map"),
    "outputs": _keys("files=strs directories=strs"),
    "tests": _keys("files=strs"),
    "workspace": _keys("root_path=str retention_days=map"),
}
WORKFLOW = _keys("type=str file=str specification=any resources=map")
RESOURCES = _keys("cvmfs=strs kerberos=bool")
STEP = _keys(
    "name=str commands=strs environment=str compute_backend=str kerberos=bool voms_proxy=bool "
    "rucio=bool unpacked_img=bool kubernetes_job_timeout=int kubernetes_cpu_request=str "
    "kubernetes_cpu_limit=str kubernetes_memory_request=str kubernetes_memory_limit=str "
    "htcondor_max_runtime=str htcondor_accounting_group=str c4p_cpu_cores=str "
    "c4p_memory_limit=str c4p_additional_requirements=str"
)
# Keys only REANA's serial engine knows: reana-client type-checks them, yet warns about them.
STEP_ENGINE = _keys("kubernetes_uid=int unpacked_image=bool slurm_partition=str slurm_time=str")
KINDS = _keys("str=a_string bool=a_boolean int=an_integer map=a_mapping strs=a_list_of_strings")
TYPE_NAMES = _keys("bool=boolean int=integer float=number str=string dict=mapping NoneType=null")
# reana-client matches kubernetes_memory_limit with an unanchored search: only the end counts.
MEMORY_LIMIT = re.compile(r"(?:\d+|(?:\d+\.)?\d+[EPTGMK]i?)$")
