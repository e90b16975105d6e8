"""The teach UI: a small web page, served by its own ROS node, to see what the robot sees,
draw a box on a frozen frame, name the object, teach it, correct it ("not this one"), list
and forget concepts and edit the vocabulary.

It talks to the povss node only through its topics, services and parameters, so it also
works against a node on another machine. `main` starts it (`povss_teach_ui`); `bridge` is its
ROS side, `app` the HTTP side, `forms` checks what the page sends and `guard` decides who may
send it.
"""
