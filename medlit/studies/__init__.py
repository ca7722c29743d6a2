"""Studies: results that are not one score per image, side by side and cached the same way (``run_study``).

``randomisation``
    cascading model-parameter randomisation, the sanity check of Adebayo et al., decided against a null of
    independently initialised networks.
``data_randomisation``
    the data randomisation test of Adebayo et al.: maps of the model against a model trained on shuffled labels.
``sanity_text``
    per-data-set sentences and tables of a sanity check's verdict.
``substrate_check``
    what filling the exact finding with each substrate does to the model's probability.
``jacobian_stability``
    the input-output Jacobian's spectrum and the first-order distance to the decision boundary.
``budget``
    how a perturbation method's scores move with its budget.
"""

from medlit.studies.budget import run_budget_study
from medlit.studies.cache import run_study
from medlit.studies.data_randomisation import data_randomisation_verdict, run_data_randomisation_check
from medlit.studies.jacobian_stability import stability_table
from medlit.studies.randomisation import cascading_randomisation, run_randomisation_check, sanity_verdict
from medlit.studies.sanity_text import localisation_baseline_table, sanity_sentence
from medlit.studies.substrate_check import finding_removal

__all__ = ["cascading_randomisation", "data_randomisation_verdict", "finding_removal", "localisation_baseline_table",
           "run_budget_study", "run_data_randomisation_check", "run_randomisation_check", "run_study",
           "sanity_sentence", "sanity_verdict", "stability_table"]
