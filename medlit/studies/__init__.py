"""Studies: results that are not one score per image, side by side and cached the same way (``run_study``).

``randomisation``
    cascading model-parameter randomisation, the sanity check of Adebayo et al.
``substrate_check``
    what filling the exact finding with each substrate does to the model's probability.
``jacobian_stability``
    the input-output Jacobian's spectrum and the first-order distance to the decision boundary.
``budget``
    how a perturbation method's scores move with its budget.
"""

from medlit.studies.budget import run_budget_study
from medlit.studies.cache import run_study
from medlit.studies.jacobian_stability import stability_table
from medlit.studies.randomisation import cascading_randomisation, run_randomisation_check, sanity_verdict
from medlit.studies.substrate_check import finding_removal

__all__ = ["cascading_randomisation", "finding_removal", "run_budget_study", "run_randomisation_check",
           "run_study", "sanity_verdict", "stability_table"]
