# lookout from the shell with mosquitto-clients (apt-get install mosquitto-clients).
# Set the broker and lookout's topic prefix (mqtt.topic_prefix) first, e.g.
#   HOST=127.0.0.1 PORT=1883 PREFIX=lookout
# Every command line stands alone: copy the one you need (this is no script to run whole).
# "me" is the caller name a request is made as; lookout's permissions key on it.

# Is lookout up? Prints the retained status: online or offline.
mosquitto_sub -h "$HOST" -p "$PORT" -t "$PREFIX/status" -C 1 -W 5

# Health over MQTT 5 request/response: mosquitto_rr sets the Response Topic and Correlation Data.
mosquitto_rr -h "$HOST" -p "$PORT" -t "$PREFIX/me/health" -e "$PREFIX/me/rr" -W 10 -m '{}'

# Ask a question and print the whole answer (stream off: a single `done` reply).
mosquitto_rr -h "$HOST" -p "$PORT" -t "$PREFIX/me/chat" -e "$PREFIX/me/rr" -W 300 -m '{"text":"Who came by today?","stream":false}'

# The same as an MQTT 3.1.1 client (Home Assistant's way): the reply topic goes in the payload, and a persistent session (-c) holds the answer until it is read.
mosquitto_sub -h "$HOST" -p "$PORT" -V mqttv311 -c -i "$PREFIX-me" -q 1 -t "$PREFIX/me/answers" -E && mosquitto_pub -h "$HOST" -p "$PORT" -V mqttv311 -q 1 -t "$PREFIX/me/chat" -m "{\"text\":\"Who came by today?\",\"stream\":false,\"reply_to\":\"$PREFIX/me/answers\"}" && mosquitto_sub -h "$HOST" -p "$PORT" -V mqttv311 -c -i "$PREFIX-me" -q 1 -t "$PREFIX/me/answers" -C 1 -W 300

# Run one tool directly, with your rights: the last five people the cameras saw.
mosquitto_rr -h "$HOST" -p "$PORT" -t "$PREFIX/me/tool" -e "$PREFIX/me/rr" -W 30 -m '{"tool_name":"search_objects","arguments":{"label":"person","limit":5}}'

# The tools lookout offers (retained, in OpenAI's function format).
mosquitto_sub -h "$HOST" -p "$PORT" -t "$PREFIX/tools" -C 1 -W 5

# Tell me when a parcel is on the porch: start a watch (it gives up after 60 minutes); the reply carries its job_id.
mosquitto_rr -h "$HOST" -p "$PORT" -t "$PREFIX/me/watch" -e "$PREFIX/me/rr" -W 30 -m '{"action":"start","camera":"front_door","condition":"a parcel is on the porch","max_duration_minutes":60}'

# Your watches, running and recently finished.
mosquitto_rr -h "$HOST" -p "$PORT" -t "$PREFIX/me/watch" -e "$PREFIX/me/rr" -W 30 -m '{"action":"list"}'

# Cancel a watch: set JOB to its job_id first.
mosquitto_rr -h "$HOST" -p "$PORT" -t "$PREFIX/me/watch" -e "$PREFIX/me/rr" -W 30 -m "{\"action\":\"cancel\",\"job_id\":\"$JOB\"}"

# Wait for the next watch alert of anyone, and print its topic and JSON (drop -C 1 to keep following).
mosquitto_sub -h "$HOST" -p "$PORT" -t "$PREFIX/+/watch/+/alert" -v -C 1
