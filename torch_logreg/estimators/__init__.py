"""The scikit-learn wing: :class:`~.estimator.LogisticRegressionClassifier` (fit, predict,
``inference_``), :class:`~.cv_estimator.LogisticRegressionCVClassifier` (``C`` chosen by k-fold
cross-validation along a warm-started regularization path, :func:`torch_logreg.path.regularization_path`)
and the one cross-validation engine (``model_selection.py``), which the CLI's
``cv`` command uses as well. Imports scikit-learn; nothing below it does."""
