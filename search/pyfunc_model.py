"""The "model from code" file of the squeeze pyfunc: MLflow runs it to build the (stateless) python model.

Logged by :func:`search.pyfunc.log_pyfunc`; ``search`` and ``trainers`` travel as the model's code paths.
"""

import mlflow

from search.pyfunc import SqueezeModel

mlflow.models.set_model(SqueezeModel())
