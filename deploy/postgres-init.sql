-- One database per service (compose.yaml's postgres runs this once, on an
-- empty volume). Each service applies its own migrations at start.
CREATE DATABASE users;
CREATE DATABASE orders;
CREATE DATABASE payments;
CREATE DATABASE inventory;
CREATE DATABASE notifications;
