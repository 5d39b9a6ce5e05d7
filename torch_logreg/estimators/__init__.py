"""The scikit-learn wing: :class:`~.estimator.LogisticRegressionClassifier` (fit, predict,
``inference_``) and the one cross-validation engine (``model_selection.py``), which the CLI's
``cv`` command uses as well. Imports scikit-learn; nothing below it does."""
