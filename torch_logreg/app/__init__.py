"""The training application: configs, data files, run directories, TensorBoard, the
``torch-logreg`` commands. Above the library; nothing in the library imports it. Importing this
package is light: the command line (``cli.py``) imports torch only once a command runs."""
